"""Task evaluation: a run's tuned adapter against its base model, on the rows it never trained on.

Layered below `run` (the engine records the held-out rows through `heldout`) and beside `plan`; importing
this package loads no torch (the CLI parses `vlmtune eval` without it).
"""
