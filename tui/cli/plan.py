"""`vlmtune plan`: what fits (memory estimate + recommendation with reasons), as text, JSON or a preset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer_core.base.errors import EXIT_FAILED, EXIT_OK, UsageError
from tui.cli.common import add_set, confirm_trust, load_preset, quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("plan", help="estimate memory and recommend a configuration that fits")
    p.add_argument("preset", nargs="?", help="a preset to plan (or use --model/--task)")
    p.add_argument("--model", help="local model folder or hub id (known ids work offline)")
    p.add_argument("--task", choices=["sft", "dpo"], default="sft")
    p.add_argument("--data", help="dataset, for real sequence lengths and image sizes")
    p.add_argument("--gpu-mib", type=int, help="plan for a GPU with this much free memory instead of this machine")
    p.add_argument("--effective-batch", type=int, help="samples per optimizer step (default 16)")
    p.add_argument("--max-length", type=int, help="cap on tokens per sample")
    p.add_argument("--image-max-pixels", type=int, metavar="PIXELS",
                   help="plan with images downsized to about this many pixels (data.image_max_pixels, e.g. 147456 "
                        "for 384x384): fewer image tokens")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write", metavar="PRESET_OUT", help="write the recommendation as a preset")
    p.add_argument("--probe-run", action="store_true",
                   help="on a GPU: train 3 real steps at the recommended size, measure, and step down if needed")
    p.add_argument("--trust-remote-code", action="store_true")
    add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer_core.plan.planner import PlanOptions, plan_for

    quiet_libraries()
    if args.gpu_mib is not None and args.gpu_mib <= 0:
        raise UsageError("--gpu-mib must be a positive number of MiB (e.g. 24576 for a 24 GiB GPU)")
    if args.image_max_pixels is not None and args.image_max_pixels < 28 * 28:
        raise UsageError("--image-max-pixels must be at least 784 (28 x 28 pixels), e.g. 147456 for 384 x 384")
    preset = load_preset(args.preset, args.set) if args.preset else None
    if preset is not None:
        confirm_trust(preset, args.trust_remote_code, args.preset)
    if preset is not None:
        from trainer_core.plan.from_preset import plan_preset_report

        model, task = preset.model.name_or_path, preset.task
        report = plan_preset_report(preset, gpu_mib=args.gpu_mib, data=args.data,
                                    effective_batch=args.effective_batch, max_length=args.max_length,
                                    trust_remote_code=args.trust_remote_code,
                                    image_max_pixels=args.image_max_pixels)
    else:
        if not args.model:
            raise UsageError("give a preset, or --model M (a local folder or a hub id) with --task sft|dpo")
        model, task = args.model, args.task
        report = plan_for(model, task, data=args.data, gpu_mib=args.gpu_mib, effective_batch=args.effective_batch or 16,
                          max_length=args.max_length, trust_remote_code=args.trust_remote_code,
                          options=PlanOptions(image_max_pixels=args.image_max_pixels))
    runs = _probe_runs(preset, report) if args.probe_run else []
    _print(report, runs, as_json=args.json)
    if runs and runs[-1].micro_batch_size != report.plan.settings.micro_batch_size:
        import dataclasses

        s = dataclasses.replace(report.plan.settings, micro_batch_size=runs[-1].micro_batch_size,
                                gradient_accumulation_steps=runs[-1].gradient_accumulation_steps)
        report = dataclasses.replace(report, plan=dataclasses.replace(report.plan, settings=s))
    if args.write:
        _write(args.write, report, preset, model, task, args.data)
    return EXIT_OK if report.plan.fits else EXIT_FAILED


def _probe_runs(preset, report) -> list:  # noqa: ANN001
    if preset is None:
        raise UsageError("--probe-run needs a preset (it trains a few real steps on its model and data)")
    from trainer_core.model.loading import cuda_available
    from trainer_core.run.probe_run import probe_run

    if not cuda_available():
        raise UsageError("--probe-run trains a few steps on a CUDA GPU, and this machine has none; "
                         "the plan above is the estimate alone")
    return probe_run(preset, report)


def _print(report, runs: list, *, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        import json

        out = report.to_dict()
        if runs:
            out["probe_runs"] = [r.__dict__ for r in runs]
        print(json.dumps(out, indent=2, default=str))
        return
    from trainer_core.plan.planner import format_plan

    print(format_plan(report))
    for r in runs:
        print(f"  probe run: micro-batch {r.micro_batch_size} x {r.gradient_accumulation_steps}: measured peak "
              f"{r.measured_peak / 2**30:.2f} GiB, predicted {r.predicted_peak / 2**30:.2f} GiB -> "
              f"{'fits' if r.fits else 'too big'}")


def _write(path: str, report, preset, model: str, task: str, data: str | None) -> None:  # noqa: ANN001
    import yaml

    from trainer_core.base.atomic import atomic_write_text
    from trainer_core.config.presets import preset_from_dict
    from trainer_core.plan.planner import plan_preset

    # the resolved preset: --set applied, local paths absolute (valid wherever --write puts the file)
    base = preset.to_dict() if preset is not None else None
    raw = plan_preset(report, base, Path(path).stem, model, data)
    raw.setdefault("task", task)
    preset_from_dict(raw)  # the written preset must load
    atomic_write_text(Path(path), "# written by `vlmtune plan`; every value can be edited\n"
                      + yaml.safe_dump(raw, sort_keys=False))
    print(f"preset written: {path}", file=sys.stderr)
