"""`vlmtune export-config`: everything needed to run the preset elsewhere (TRL CLI config + data in TRL's
format, accelerate config, and the launch command lines for each machine).

The folder is written only when it is new, empty or an earlier export's (`--force` for any other, where
only the export's own files are replaced). launch.sh holds text from the preset and the data (paths, notes):
commands are shlex-quoted and comments flattened to one line, so nothing in them can become a command.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from trainer_core.base.errors import EXIT_OK
from tui.cli.common import (
    add_distributed,
    add_set,
    add_trust,
    confirm_trust,
    overrides,
    preset_to_train,
    quiet_libraries,
)


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("export-config", help="write a TRL CLI config, an accelerate config and the launch "
                                             "commands, to run the preset elsewhere")
    p.add_argument("preset")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="a new or empty folder, or one an earlier export-config wrote")
    p.add_argument("--force", action="store_true",
                   help="write into a folder holding other files too, replacing only the files an export writes")
    add_set(p)
    add_trust(p)
    p.add_argument("--run-dir", help="the shared run folder the printed commands use")
    add_distributed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer_core.base.atomic import atomic_write_text
    from trainer_core.export.trl_cli import claim_export_dir, write_trl_config
    from trainer_core.model.loading import resolve_precision
    from trainer_core.run.distributed import node_command_lines, write_accelerate_config

    preset, _ = preset_to_train(args.preset, None, overrides(args))
    confirm_trust(preset, args.trust_remote_code, args.preset)
    # Before anything is written: a folder of the user's is refused whole, not half overwritten.
    out = claim_export_dir(args.out, force=args.force)
    quiet_libraries()
    preset_file = atomic_write_text(out / "preset.yaml", preset.to_yaml())
    trl_file, trl = write_trl_config(preset, out, force=args.force)
    accel = write_accelerate_config(out, preset.distributed, precision=resolve_precision(preset.precision,
                                                                                         preset.quantization))
    d = preset.distributed
    run_dir = args.run_dir or str(Path(preset.output_dir) / f"{preset.name}-shared")
    vlmtune_lines = node_command_lines(str(preset_file), d, run_dir)
    trl_line = shlex.join(["trl", trl.command, "--config", str(trl_file), "--accelerate_config", str(accel)]
                          + (["--machine_rank", "R"] if d.num_machines > 1 else []))
    atomic_write_text(out / "launch.sh", launch_script(vlmtune_lines, trl_line, trl.notes, d.num_machines > 1))
    print_summary(out, preset_file, trl_file, accel, vlmtune_lines, trl_line, trl.notes, d.num_machines > 1)
    return EXIT_OK


def launch_script(vlmtune_lines: list[str], trl_line: str, notes: list[str], per_machine: bool) -> str:
    """launch.sh: the vlmtune commands (each built by shlex.join), then TRL's command and the notes as comments
    flattened to one line each (a line break in a path or a note would otherwise end the comment)."""
    from trainer_core.base.safe_text import one_line

    lines = ["#!/bin/sh", "# Written by `vlmtune export-config`. With vlmtune (one line per machine):"]
    for rank, line in enumerate(vlmtune_lines):
        if per_machine:
            lines.append(f"# machine {rank}:")
        lines.append(line)
    lines += ["", "# Or with TRL's own command line (same model, data, LoRA and training values):",
              f"# {one_line(trl_line)}"]
    lines += [f"# note: {one_line(n)}" for n in notes]
    return "\n".join(lines) + "\n"


def print_summary(out: Path, preset_file: Path, trl_file: Path, accel: Path, vlmtune_lines: list[str],
                  trl_line: str, notes: list[str], per_machine: bool) -> None:
    """What was written and the commands, as terminal text: control characters from paths are shown, not sent."""
    from trainer_core.base.safe_text import one_line

    print(one_line(f"wrote {preset_file}, {trl_file} (+ {out / 'data'}), {accel} and {out / 'launch.sh'}") + "\n")
    print("vlmtune, on each machine:" if per_machine else "vlmtune:")
    for rank, line in enumerate(vlmtune_lines):
        print(f"  {'[machine ' + str(rank) + '] ' if per_machine else ''}{one_line(line)}")
    print(f"\nTRL's command line:\n  {one_line(trl_line)}")
    for n in notes:
        print(f"  note: {one_line(n)}")
