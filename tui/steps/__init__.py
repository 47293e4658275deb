"""The wizard's steps, one widget each. They render state and call trainer_core; no training logic."""

from tui.steps.base import Step
from tui.steps.data import DataStep
from tui.steps.machine import MachineStep
from tui.steps.model import ModelStep
from tui.steps.plan import PlanStep
from tui.steps.review import ReviewStep
from tui.steps.start import StartStep

__all__ = ["DataStep", "MachineStep", "ModelStep", "PlanStep", "ReviewStep", "StartStep", "Step"]
