"""`vlmtune` command line. Parsing imports nothing heavy: torch, transformers, TRL and PEFT load inside
the commands that need them (importing them costs seconds), so `--help` and `--version` are instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from trainer_core import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed as one paragraph, exit code 2."""


def _quiet_libraries() -> None:
    from trainer_core.headless import quiet_libraries

    quiet_libraries()


def _load_preset(path: str, overrides: list[str]):
    from trainer_core.presets import load_preset

    return load_preset(path, overrides)


_DIST_FLAGS = {"num_processes": "num_processes", "num_machines": "num_machines", "machine_rank": "machine_rank",
               "main_process_ip": "main_process_ip", "main_process_port": "main_process_port", "strategy": "strategy"}


def _train_preset(args: argparse.Namespace):
    """The preset and the run folder to resume (None for a new run), from the arguments."""
    from trainer_core.presets import load_preset
    from trainer_core.run_files import newest_run

    # Flags for the distributed section are overrides like --set, and win over it (they are more specific).
    overrides = list(args.set) + [f"distributed.{key}={getattr(args, flag)}" for flag, key in _DIST_FLAGS.items()
                                  if getattr(args, flag, None) is not None]
    if args.preset is None and args.resume in (None, "newest"):
        raise UserError("give a preset file (vlmtune train presets/NAME.yaml) or --resume RUN_DIR")
    if args.resume == "newest":
        preset = load_preset(args.preset, overrides)
        found = newest_run(preset.output_dir, preset.name)
        if found is None:
            raise UserError(f"no run of {preset.name!r} with a checkpoint under {preset.output_dir}/ to resume; "
                            f"start one with `vlmtune train {args.preset}`, or name the run: --resume RUN_DIR")
        print(f"resuming {found} (the newest run of {preset.name} with a checkpoint)", file=sys.stderr)
        return load_preset(found / "preset.yaml", overrides), found
    if args.resume is not None:
        run_dir = Path(args.resume)
        if not (run_dir / "preset.yaml").exists():
            raise UserError(f"{run_dir} is not a vlmtune run directory (no preset.yaml in it)")
        # The run's own resolved preset, unless another is given; --set still applies (e.g. more steps).
        return load_preset(args.preset or run_dir / "preset.yaml", overrides), run_dir
    return load_preset(args.preset, overrides), None


def cmd_train(args: argparse.Namespace) -> int:
    from trainer_core.distributed import is_distributed

    preset, resume = _train_preset(args)
    if is_distributed(preset.distributed):
        return _train_distributed(preset, resume, args)
    if not args.headless:
        from tui.monitor_app import MonitorApp

        app = MonitorApp(preset=preset, resume=resume, fit_check=args.fit_check)
        app.run()
        result = app.result
        if result is None:
            return EXIT_FAILED
        print(result.run_dir)
        if result.status == "failed":
            print(f"error: {result.error}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    from trainer_core.headless import report, run_headless

    result = run_headless(preset, resume=resume, run_dir=args.run_dir, debug=args.debug, fit_check=args.fit_check)
    return report(result, debug=args.debug)


def _train_distributed(preset, resume: Path | None, args: argparse.Namespace) -> int:  # noqa: ANN001
    """Several processes: write accelerate.yaml into the run folder, start `accelerate launch`, follow it."""
    from trainer_core import distributed
    from trainer_core.loading import resolve_precision
    from trainer_core.run_files import new_run_dir

    if os.environ.get("WORLD_SIZE"):
        raise UserError("already inside a multi-process launch: run `vlmtune train` itself, not under "
                        "accelerate/torchrun (vlmtune starts accelerate for you)")
    d = preset.distributed
    if d.num_machines > 1 and resume is None and not args.run_dir:
        raise UserError("with several machines every machine must use the same run folder, on a filesystem they "
                        "all see: give the same --run-dir PATH on each (`vlmtune export-config` prints the commands)")
    if resume is not None:
        run_dir = resume
    else:
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(preset.output_dir, preset.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Machine 0 owns the run folder's top level; the others keep their launch files apart (same folder, shared).
    files = run_dir if d.machine_rank == 0 else run_dir / f"node-{d.machine_rank}"
    files.mkdir(parents=True, exist_ok=True)
    preset_file = files / ("preset.yaml" if d.machine_rank == 0 else "preset-launch.yaml")
    preset_file.write_text(preset.to_yaml(), encoding="utf-8")
    precision = resolve_precision(preset.precision, preset.quantization)
    launch = distributed.start(preset, preset_file, run_dir, resume=resume is not None, precision=precision,
                               config_folder=files, log_file=None if args.headless else run_dir / "console.log")
    print(f"{d.num_processes} processes on {d.num_machines} machine(s) ({d.strategy}), run folder {run_dir}",
          file=sys.stderr)
    if args.headless:
        def on_signal(signum, frame):  # noqa: ANN001
            launch.request(f"signal {signal.Signals(signum).name}")
            os.write(2, b"\nstopping every process at the end of this step (saving a checkpoint)\n")

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rc = launch.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    else:
        from tui.monitor_app import MonitorApp

        MonitorApp(follow=run_dir, launch=launch).run()
        rc = launch.wait()
    summary = distributed.finish_summary(run_dir, rc)
    print(run_dir)
    if summary.get("status") == "failed":
        print(f"error: {summary.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_export_config(args: argparse.Namespace) -> int:
    """Everything needed to take the run elsewhere: TRL CLI config (+ data in TRL's format), accelerate config,
    and the launch command lines for each machine."""
    import shlex

    from trainer_core.distributed import node_command_lines, write_accelerate_config
    from trainer_core.loading import resolve_precision
    from trainer_core.trl_cli import write_trl_config

    preset, _ = _train_preset(argparse.Namespace(**{**vars(args), "resume": None}))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    _quiet_libraries()
    preset_file = out / "preset.yaml"
    preset_file.write_text(preset.to_yaml(), encoding="utf-8")
    trl_file, trl = write_trl_config(preset, out)
    accel = write_accelerate_config(out, preset.distributed, precision=resolve_precision(preset.precision,
                                                                                         preset.quantization))
    d = preset.distributed
    run_dir = args.run_dir or str(Path(preset.output_dir) / f"{preset.name}-shared")
    vlmtune_lines = node_command_lines(str(preset_file), d, run_dir)
    trl_line = shlex.join(["trl", trl.command, "--config", str(trl_file), "--accelerate_config", str(accel)]
                          + (["--machine_rank", "R"] if d.num_machines > 1 else []))
    lines = ["#!/bin/sh", "# Written by `vlmtune export-config`. With vlmtune (one line per machine):"]
    lines += [f"# machine {r}:\n{line}" if d.num_machines > 1 else line for r, line in enumerate(vlmtune_lines)]
    lines += ["", "# Or with TRL's own command line (same model, data, LoRA and training values):",
              f"# {trl_line}"]
    lines += [f"# note: {n}" for n in trl.notes]
    (out / "launch.sh").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {preset_file}, {trl_file} (+ {out / 'data'}), {accel} and {out / 'launch.sh'}\n")
    print("vlmtune, on each machine:" if d.num_machines > 1 else "vlmtune:")
    for r, line in enumerate(vlmtune_lines):
        print(f"  {'[machine ' + str(r) + '] ' if d.num_machines > 1 else ''}{line}")
    print(f"\nTRL's command line:\n  {trl_line}")
    for n in trl.notes:
        print(f"  note: {n}")
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "summary.json").exists() and not (run_dir / "metrics.jsonl").exists():
        raise UserError(f"{run_dir} is not a vlmtune run directory (no summary.json or metrics.jsonl)")
    from tui.monitor_app import MonitorApp

    MonitorApp(follow=run_dir).run()
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    preset = _load_preset(args.preset, args.set)
    print(preset.to_yaml() if args.show else f"{args.preset}: valid ({preset.task}, {preset.model.name_or_path})")
    return EXIT_OK


def cmd_chat(args: argparse.Namespace) -> int:
    if args.prompt is None:
        if not args.model and not args.adapter:
            raise UserError("give --model (a base model) and/or --adapter (a run directory)")
        from tui.chat_app import ChatApp

        ChatApp(args.model, args.adapter, args.trust_remote_code).run()
        return EXIT_OK
    if args.image and not Path(args.image).is_file():
        raise UserError(f"image not found: {args.image}")
    _quiet_libraries()
    from trainer_core.chat import GenerationSettings, generate, load_for_chat

    loaded = load_for_chat(args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    if args.image and not loaded.is_vlm:
        raise UserError("this is a text-only model: --image needs a vision-language model")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    print(generate(loaded.model, loaded.processing_class, loaded.is_vlm, args.prompt, args.image, settings))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    _quiet_libraries()
    from trainer_core.export import export_merged

    out = export_merged(args.run_dir, args.out, base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    print(out)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from trainer_core.demo import build_demo, demo_paths, is_built

    root = Path(args.out)
    paths = demo_paths(root)
    if args.force or not is_built(root):
        _quiet_libraries()
        print(f"building the tiny demo in {paths.root} ...", file=sys.stderr)
        # The app trains in a thread worker: torch work in the main thread would slow it (trainer_core.threads).
        from trainer_core.threads import in_passing_thread

        in_passing_thread(build_demo, root)
    else:
        print(f"using the demo in {paths.root} (--force rebuilds it)", file=sys.stderr)
    if not args.headless and not args.no_app:
        from tui.app import run_app, user_presets_dir

        run_app(preset_folders=[paths.presets, Path("presets"), user_presets_dir()],
                run_folders=[paths.runs, Path("runs")], presets_dir=Path("presets"))
        return EXIT_OK
    if not args.headless:
        print(f"tiny demo ready in {paths.root}:\n"
              f"  model       {paths.model}  (SmolVLM architecture, random init)\n"
              f"  text model  {paths.text_model}\n"
              f"  data        {paths.data}\n"
              f"  presets     {', '.join(sorted(p.name for p in paths.presets.glob('*.yaml')))}\n"
              f"train one:    vlmtune train {paths.presets / 'demo-sft.yaml'} --headless\n"
              f"or all:       vlmtune demo --headless")
        return EXIT_OK
    code = EXIT_OK
    for name in ("demo-sft", "demo-dpo"):
        ns = argparse.Namespace(preset=str(paths.presets / f"{name}.yaml"), set=args.set, headless=True,
                                resume=None, run_dir=None, debug=args.debug)
        code = max(code, cmd_train(ns))
    return code


def cmd_probe(args: argparse.Namespace) -> int:
    from trainer_core.hardware import format_machine, probe

    info = probe(args.output_dir)
    if args.json:
        import json

        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(format_machine(info))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    import yaml

    from trainer_core.planning import format_plan, plan_for, plan_preset

    _quiet_libraries()
    base = None
    data_section = None
    if args.preset:
        preset = _load_preset(args.preset, args.set)
        model, task = preset.model.name_or_path, preset.task
        data_section = preset.data
        # the resolved preset: --set applied, local paths absolute (valid wherever --write puts the file)
        base = preset.to_dict()
        max_length = args.max_length or preset.training.max_length
        effective = args.effective_batch or preset.training.micro_batch_size * preset.training.gradient_accumulation_steps
        lora_r, lora_dropout, lora = preset.lora.r, preset.lora.dropout, preset.lora
    else:
        if not args.model:
            raise UserError("give a preset, or --model M (a local folder or a hub id) with --task sft|dpo")
        model, task, max_length = args.model, args.task, args.max_length
        effective = args.effective_batch or 16
        lora_r, lora_dropout, lora = 16, 0.05, None
    if args.gpu_mib is not None and args.gpu_mib <= 0:
        raise UserError("--gpu-mib must be a positive number of MiB (e.g. 24576 for a 24 GiB GPU)")
    report = plan_for(model, task, data=args.data, gpu_mib=args.gpu_mib, effective_batch=effective,
                      max_length=max_length, data_section=data_section, trust_remote_code=args.trust_remote_code,
                      lora_r=lora_r, lora_dropout=lora_dropout, lora=lora)
    runs = []
    if args.probe_run:
        if not args.preset:
            raise UserError("--probe-run needs a preset (it trains a few real steps on its model and data)")
        from trainer_core.loading import cuda_available
        from trainer_core.planning import probe_run

        if not cuda_available():
            raise UserError("--probe-run trains a few steps on a CUDA GPU, and this machine has none; "
                            "the plan above is the estimate alone")
        runs = probe_run(preset, report)
    if args.json:
        out = report.to_dict()
        if runs:
            out["probe_runs"] = [r.__dict__ for r in runs]
        print(json.dumps(out, indent=2, default=str))
    else:
        print(format_plan(report))
        for r in runs:
            print(f"  probe run: micro-batch {r.micro_batch_size} x {r.gradient_accumulation_steps}: measured peak "
                  f"{r.measured_peak / 2**30:.2f} GiB, predicted {r.predicted_peak / 2**30:.2f} GiB -> "
                  f"{'fits' if r.fits else 'too big'}")
    if runs and runs[-1].micro_batch_size != report.plan.settings.micro_batch_size:
        import dataclasses

        s = dataclasses.replace(report.plan.settings, micro_batch_size=runs[-1].micro_batch_size,
                                gradient_accumulation_steps=runs[-1].gradient_accumulation_steps)
        report = dataclasses.replace(report, plan=dataclasses.replace(report.plan, settings=s))
    if args.write:
        from trainer_core.atomic import atomic_write_text
        from trainer_core.presets import preset_from_dict

        name = Path(args.write).stem
        raw = plan_preset(report, base, name, model, args.data)
        raw.setdefault("task", task)
        preset_from_dict(raw)  # the written preset must load
        atomic_write_text(Path(args.write), "# written by `vlmtune plan`; every value can be edited\n"
                          + yaml.safe_dump(raw, sort_keys=False))
        print(f"preset written: {args.write}", file=sys.stderr)
    return EXIT_OK if report.plan.fits else EXIT_FAILED


def _parse_columns(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        role, sep, column = part.partition("=")
        if not sep or not role.strip() or not column.strip():
            raise UserError(f"--columns takes role=column pairs separated by commas (e.g. prompt=question,"
                            f"completion=answer); {part!r} is not one")
        out[role.strip()] = column.strip()
    return out


def cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from trainer_core.data.check import check_data, format_report

    if args.preview < 0:
        raise UserError("--preview must be 0 or more")
    _quiet_libraries()
    report = check_data(args.path, args.task, columns=_parse_columns(args.columns), fmt=args.format,
                        model=args.model, preview=args.preview, limit=args.limit, image_dir=args.image_dir,
                        subset=args.subset, split=args.split)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_report(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmtune",
        description="Fine-tune vision-language models and text LLMs (SFT, DPO, LoRA, QLoRA).",
        epilog="Start with `vlmtune demo`: a tiny model and data that train on a CPU in seconds.",
    )
    parser.add_argument("--version", action="version", version=f"vlmtune {__version__}")
    parser.add_argument("--debug", action="store_true", help="print tracebacks")
    # --debug works after the subcommand too, where the error messages suggest it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_parser = sub.add_parser

    def add_parser(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        return _add_parser(*a, parents=[common, *kw.pop("parents", [])], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-config", help="write a TRL CLI config, an accelerate config and the launch "
                                             "commands, to run the preset elsewhere")
    p.add_argument("preset")
    p.add_argument("--out", required=True, metavar="DIR")
    add_set(p)
    p.add_argument("--run-dir", help="the shared run folder the printed commands use")
    add_distributed(p)
    p.set_defaults(func=cmd_export_config)

    p = sub.add_parser("monitor", help="watch a run (live in another process, or finished) from its folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("check", help="validate a preset without training")
    p.add_argument("preset")
    add_set(p)
    p.add_argument("--show", action="store_true", help="print the resolved preset")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("chat", help="ask a model (base or base + adapter) one question")
    p.add_argument("--model", help="base model folder or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="run directory or adapter folder")
    p.add_argument("--prompt", help="the question")
    p.add_argument("--image", help="an image file, for vision-language models")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("export", help="merge a run's LoRA adapter into the base model")
    p.add_argument("run_dir", help="run directory or adapter folder")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--base-model", help="base model (default: the one the adapter names)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = data_sub.add_parser("check", help="detect the format, validate every row, show stats and examples")
    p.add_argument("path", help="file, folder or hub dataset id")
    p.add_argument("--task", choices=["sft", "dpo"], required=True)
    p.add_argument("--columns", help="role=column pairs, e.g. prompt=question,completion=answer,images=img")
    p.add_argument("--format", default="auto", help="auto, or a format name to insist on")
    p.add_argument("--model", help="model folder (or hub id) whose tokenizer/template renders and counts")
    p.add_argument("--preview", type=int, default=3, metavar="N", help="examples to show (default 3)")
    p.add_argument("--limit", type=int, help="read only the first N rows")
    p.add_argument("--image-dir", help="folder that relative image paths start from")
    p.add_argument("--subset", help="hub dataset config name")
    p.add_argument("--split", default="train")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_check)

    p = sub.add_parser("probe", help="what this machine has: GPUs and free memory, bf16, RAM, disk")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output-dir", default=".", help="where runs go (its free disk is reported)")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("plan", help="estimate memory and recommend a configuration that fits")
    p.add_argument("preset", nargs="?", help="a preset to plan (or use --model/--task)")
    p.add_argument("--model", help="local model folder or hub id (known ids work offline)")
    p.add_argument("--task", choices=["sft", "dpo"], default="sft")
    p.add_argument("--data", help="dataset, for real sequence lengths and image sizes")
    p.add_argument("--gpu-mib", type=int, help="plan for a GPU with this much free memory instead of this machine")
    p.add_argument("--effective-batch", type=int, help="samples per optimizer step (default 16)")
    p.add_argument("--max-length", type=int, help="cap on tokens per sample")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write", metavar="PRESET_OUT", help="write the recommendation as a preset")
    p.add_argument("--probe-run", action="store_true",
                   help="on a GPU: train 3 real steps at the recommended size, measure, and step down if needed")
    p.add_argument("--trust-remote-code", action="store_true")
    add_set(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("demo", help="build the tiny offline demo (model, data, presets)")
    p.add_argument("--out", default="vlmtune-demo", help="folder (default: ./vlmtune-demo)")
    p.add_argument("--headless", action="store_true", help="also train demo-sft and demo-dpo")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.add_argument("--no-app", action="store_true", help="only build it and print what it made")
    add_set(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from tui.app import run_app

        run_app()
        return EXIT_OK
    from trainer_core.data.problems import DataError
    from trainer_core.presets import PresetError

    try:
        return args.func(args)
    except (UserError, PresetError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the user gets one paragraph; --debug gives the traceback
        if args.debug:
            raise
        from trainer_core.loading import ModelLoadError

        if isinstance(exc, (ModelLoadError, FileNotFoundError, FileExistsError, ValueError)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, (FileNotFoundError, FileExistsError)) else EXIT_FAILED
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
