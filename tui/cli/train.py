"""`vlmtune train`: a preset under the live monitor, headless, or as several processes under accelerate."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from trainer_core.base.errors import EXIT_FAILED, EXIT_OK, UsageError
from tui.cli.common import add_distributed, add_set, add_trust, confirm_trust, overrides, preset_to_train


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("train", help="train from a preset")
    p.add_argument("preset", nargs="?", help="preset YAML file")
    add_set(p)
    add_trust(p)
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
    # `~` is the user's home here too (a quoted or --flag=~/x path reaches us unexpanded)
    resume = args.resume if args.resume in (None, "newest") else str(Path(args.resume).expanduser())
    run_dir = str(Path(args.run_dir).expanduser()) if args.run_dir else None
    preset, resume = preset_to_train(args.preset, resume, overrides(args))
    confirm_trust(preset, args.trust_remote_code, args.preset or resume)
    return train(preset, resume, headless=args.headless, run_dir=run_dir, debug=args.debug,
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
            return getattr(result.exception, "exit_code", EXIT_FAILED)  # a refused folder is a usage error
        return EXIT_OK
    from trainer_core.run.headless import report, run_headless

    result = run_headless(preset, resume=resume, run_dir=run_dir, debug=debug, fit_check=fit_check)
    return report(result, debug=debug)


def _train_distributed(preset, resume: Path | None, *, headless: bool, run_dir: str | None) -> int:  # noqa: ANN001
    """Several processes: write accelerate.yaml into the run folder, start `accelerate launch`, follow it."""
    from trainer_core.model.loading import resolve_precision
    from trainer_core.run import distributed
    from trainer_core.run.preflight import check_launch

    if os.environ.get("WORLD_SIZE"):
        raise UsageError("already inside a multi-process launch: run `vlmtune train` itself, not under "
                         "accelerate/torchrun (vlmtune starts accelerate for you)")
    d = preset.distributed
    if d.num_machines > 1 and resume is None and not run_dir:
        raise UsageError("with several machines every machine must use the same run folder, on a filesystem they "
                         "all see: give the same --run-dir PATH on each (`vlmtune export-config` prints the commands)")
    check_launch(preset, gpus=_local_gpus())
    folder = _launch_folder(preset, resume, run_dir)
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


def _launch_folder(preset, resume: Path | None, run_dir: str | None) -> Path:  # noqa: ANN001
    """The run folder of a launch, checked before anything is written into it: the ranks' engine refuses it too,
    but only after this launcher has written its preset and accelerate config there."""
    from trainer_core.run.folder import claim_run_dir, new_run_dir, open_run
    from trainer_core.run.lock import check_free

    if resume is not None:
        folder = open_run(resume, preset.name)
    elif run_dir:
        folder = claim_run_dir(run_dir, preset.name)  # every machine claims the shared folder: same preset, no results
    else:
        folder = new_run_dir(preset.output_dir, preset.name)
    if preset.distributed.machine_rank == 0:
        # Only here: machine 0's rank 0 holds the lock for the run, before the other machines have joined.
        check_free(folder)
    return folder


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
