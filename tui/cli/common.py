"""What the commands share: argument groups and plain functions. Nothing heavy is imported at module level."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer_core.base.errors import UsageError

DIST_FLAGS = ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port", "strategy")


def quiet_libraries() -> None:
    from trainer_core.run.headless import quiet_libraries as quiet

    quiet()


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set training.max_steps=20 (repeatable)")


def add_distributed(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several processes (accelerate launch); also the preset's distributed: section")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes on all machines, one per GPU")
    g.add_argument("--num-machines", type=int, metavar="M")
    g.add_argument("--machine-rank", type=int, metavar="R", help="this machine's rank (0 = main)")
    g.add_argument("--main-process-ip", metavar="IP")
    g.add_argument("--main-process-port", type=int, metavar="PORT")
    g.add_argument("--strategy", choices=["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"])


def overrides(args: argparse.Namespace) -> list[str]:
    """--set values, then the distributed flags as overrides of the distributed: section (more specific: they win)."""
    return list(args.set) + [f"distributed.{key}={getattr(args, key)}" for key in DIST_FLAGS
                             if getattr(args, key, None) is not None]


def load_preset(path: str | Path, sets: list[str]):  # noqa: ANN201
    from trainer_core.config.presets import load_preset as load

    return load(path, sets)


def add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="confirm that the model's own Python code may run (needed, each time, when the preset "
                        "sets model.trust_remote_code: true)")


def confirm_trust(preset, flag: bool, source: str | Path) -> None:  # noqa: ANN001
    """A preset alone cannot run a model's code: its trust_remote_code needs the user's flag on each command."""
    if preset.model.trust_remote_code and not flag:
        raise UsageError(f"{source} sets model.trust_remote_code: true, so loading {preset.model.name_or_path} "
                         "would run the Python code in its folder or repository on this machine. Read that code, "
                         "then confirm with --trust-remote-code (each time), or set it to false")


def preset_to_train(preset: str | None, resume: str | None, sets: list[str]):  # noqa: ANN201
    """The preset and the run folder to resume (None for a new run). `resume` is None, "newest" or a folder."""
    import sys

    from trainer_core.run.folder import newest_run

    if preset is None and resume in (None, "newest"):
        raise UsageError("give a preset file (vlmtune train presets/NAME.yaml) or --resume RUN_DIR")
    if resume == "newest":
        loaded = load_preset(preset, sets)
        found = newest_run(loaded.output_dir, loaded.name)
        if found is None:
            raise UsageError(f"no run of {loaded.name!r} with a checkpoint under {loaded.output_dir}/ to resume; "
                             f"start one with `vlmtune train {preset}`, or name the run: --resume RUN_DIR")
        print(f"resuming {found} (the newest run of {loaded.name} with a checkpoint)", file=sys.stderr)
        return _fits_run(load_preset(found / "preset.yaml", sets), found)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "preset.yaml").exists():
            raise UsageError(f"{run_dir} is not a vlmtune run directory (no preset.yaml in it)")
        # The run's own resolved preset, unless another is given; --set still applies (e.g. more steps).
        return _fits_run(load_preset(preset or run_dir / "preset.yaml", sets), run_dir)
    return load_preset(preset, sets), None


def _fits_run(preset, run_dir: Path):  # noqa: ANN001, ANN202
    """Refuse a preset that does not fit the run here, before a multi-process launch rewrites its preset.yaml
    (the engine checks again for callers that do not come through the CLI)."""
    from trainer_core.run.resume import check_preset

    check_preset(preset, run_dir)
    return preset, run_dir
