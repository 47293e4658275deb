"""Running a preset: the engine, checkpoints, OOM back-off, fit check, several processes, the run folder."""
