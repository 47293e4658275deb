"""The wizard's steps, one widget each. They render state and call trainer_core; no training logic."""

from tui.wizard.steps.base import Step
from tui.wizard.steps.data import DataStep
from tui.wizard.steps.machine import MachineStep
from tui.wizard.steps.model import ModelStep
from tui.wizard.steps.plan import PlanStep
from tui.wizard.steps.review import ReviewStep
from tui.wizard.steps.start import StartStep

__all__ = ["DataStep", "MachineStep", "ModelStep", "PlanStep", "ReviewStep", "StartStep", "Step"]
