"""`vlmtune train`: a preset under the live monitor, headless, or as several processes under accelerate."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from trainer_core.base.errors import EXIT_FAILED, EXIT_OK, UsageError
from tui.cli.common import add_distributed, add_set, overrides, preset_to_train


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("train", help="train from a preset")
    p.add_argument("preset", nargs="?", help="preset YAML file")
    add_set(p)
    p.add_argument("--headless", action="store_true", help="progress bar instead of the live monitor")
    p.add_argument("--resume", metavar="RUN_DIR", nargs="?", const="newest",
                   help="continue a run from its newest complete checkpoint (alone: the newest run of the preset)")
    p.add_argument("--run-dir", help="use this run folder instead of a new time-stamped one (the same on every "
                                     "machine of a multi-machine run)")
    add_distributed(p)
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--fit-check", dest="fit_check", action="store_true", default=None,
                     help="before step 1, run the longest batch once and back off if it does not fit (default on GPUs)")
    fit.add_argument("--no-fit-check", dest="fit_check", action="store_false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    preset, resume = preset_to_train(args.preset, args.resume, overrides(args))
    return train(preset, resume, headless=args.headless, run_dir=args.run_dir, debug=args.debug,
                 fit_check=args.fit_check)


def train(preset, resume: Path | None, *, headless: bool, run_dir: str | None = None, debug: bool = False,  # noqa: ANN001
          fit_check: bool | None = None) -> int:
    """Train one preset; the exit code. `vlmtune demo --headless` calls this too."""
    from trainer_core.run.distributed import is_distributed

    if is_distributed(preset.distributed):
        return _train_distributed(preset, resume, headless=headless, run_dir=run_dir)
    if not headless:
        from tui.monitor.app import MonitorApp

        app = MonitorApp(preset=preset, resume=resume, fit_check=fit_check)
        app.run()
        result = app.result
        if result is None:
            return EXIT_FAILED
        print(result.run_dir)
        if result.status == "failed":
            print(f"error: {result.error}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    from trainer_core.run.headless import report, run_headless

    result = run_headless(preset, resume=resume, run_dir=run_dir, debug=debug, fit_check=fit_check)
    return report(result, debug=debug)


def _train_distributed(preset, resume: Path | None, *, headless: bool, run_dir: str | None) -> int:  # noqa: ANN001
    """Several processes: write accelerate.yaml into the run folder, start `accelerate launch`, follow it."""
    from trainer_core.model.loading import resolve_precision
    from trainer_core.run import distributed
    from trainer_core.run.folder import new_run_dir
    from trainer_core.run.preflight import check_launch

    if os.environ.get("WORLD_SIZE"):
        raise UsageError("already inside a multi-process launch: run `vlmtune train` itself, not under "
                         "accelerate/torchrun (vlmtune starts accelerate for you)")
    d = preset.distributed
    if d.num_machines > 1 and resume is None and not run_dir:
        raise UsageError("with several machines every machine must use the same run folder, on a filesystem they "
                         "all see: give the same --run-dir PATH on each (`vlmtune export-config` prints the commands)")
    check_launch(preset, gpus=_local_gpus())
    folder = resume if resume is not None else (Path(run_dir) if run_dir else new_run_dir(preset.output_dir,
                                                                                        preset.name))
    folder.mkdir(parents=True, exist_ok=True)
    # Machine 0 owns the run folder's top level; the others keep their launch files apart (same folder, shared).
    files = folder if d.machine_rank == 0 else folder / f"node-{d.machine_rank}"
    files.mkdir(parents=True, exist_ok=True)
    preset_file = files / ("preset.yaml" if d.machine_rank == 0 else "preset-launch.yaml")
    preset_file.write_text(preset.to_yaml(), encoding="utf-8")
    precision = resolve_precision(preset.precision, preset.quantization)
    launch = distributed.start(preset, preset_file, folder, resume=resume is not None, precision=precision,
                               config_folder=files, log_file=None if headless else folder / "console.log")
    print(f"{d.num_processes} processes on {d.num_machines} machine(s) ({d.strategy}), run folder {folder}",
          file=sys.stderr)
    rc = _wait_headless(launch) if headless else _wait_in_monitor(launch, folder)
    summary = distributed.finish_summary(folder, rc)
    print(folder)
    if summary.get("status") == "failed":
        print(f"error: {summary.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _wait_headless(launch) -> int:  # noqa: ANN001
    def on_signal(signum, frame):  # noqa: ANN001
        launch.request(f"signal {signal.Signals(signum).name}")
        os.write(2, b"\nstopping every process at the end of this step (saving a checkpoint)\n")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return launch.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _wait_in_monitor(launch, folder: Path) -> int:  # noqa: ANN001
    from tui.monitor.app import MonitorApp

    MonitorApp(follow=folder, launch=launch).run()
    return launch.wait()


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
