"""`vlmtune export-config`: everything needed to run the preset elsewhere (TRL CLI config + data in TRL's
format, accelerate config, and the launch command lines for each machine)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from trainer_core.base.errors import EXIT_OK, UsageError
from tui.cli.common import add_distributed, add_set, overrides, preset_to_train, quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("export-config", help="write a TRL CLI config, an accelerate config and the launch "
                                             "commands, to run the preset elsewhere")
    p.add_argument("preset")
    p.add_argument("--out", required=True, metavar="DIR")
    add_set(p)
    p.add_argument("--run-dir", help="the shared run folder the printed commands use")
    add_distributed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer_core.export.trl_cli import write_trl_config
    from trainer_core.model.loading import resolve_precision
    from trainer_core.run.distributed import node_command_lines, write_accelerate_config

    preset, _ = preset_to_train(args.preset, None, overrides(args))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    quiet_libraries()
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
