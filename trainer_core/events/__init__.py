"""The event stream: typed events (`types`), their subscription and the stop requests (`stream`), the history
the monitor draws and the follower that reads a run folder back into events (`history`), and the headless
progress bar (`console`)."""

from trainer_core.events.stream import EventStream, QueueSubscriber, StopSignal, Subscriber
from trainer_core.events.types import (
    CheckpointSaved,
    EvalLogged,
    Event,
    LogMessage,
    Memory,
    OomBackoff,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StepLogged,
    TaskEvalScored,
)

__all__ = ["CheckpointSaved", "EvalLogged", "Event", "EventStream", "LogMessage", "Memory", "OomBackoff",
           "QueueSubscriber", "RunFinished", "RunStarted", "SampleGenerated", "StepLogged", "StopSignal",
           "Subscriber", "TaskEvalScored"]
