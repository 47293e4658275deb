"""`vlmtune` command line: one module per command, each registering its own arguments. Parsing imports
nothing heavy: torch, transformers, TRL and PEFT load inside the commands that need them (importing them costs
seconds), so `--help` and `--version` are instant.
"""

from __future__ import annotations

import argparse
import sys

from trainer_core import __version__
from trainer_core.base.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, VlmtuneError
from tui.cli import chat, check, data, demo, eval, export, export_config, monitor, plan, probe, train

COMMANDS = (train, export_config, monitor, check, chat, export, data, probe, plan, demo, eval)


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
    add_parser = sub.add_parser

    def add_with_common(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        return add_parser(*a, parents=[common, *kw.pop("parents", [])], **kw)

    sub.add_parser = add_with_common  # type: ignore[method-assign]
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from tui.wizard.app import run_app

        run_app()
        return EXIT_OK
    try:
        return args.func(args)
    except VlmtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the user gets one paragraph; --debug gives the traceback
        if args.debug:
            raise
        if isinstance(exc, (FileNotFoundError, FileExistsError, ValueError)):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, (FileNotFoundError, FileExistsError)) else EXIT_FAILED
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_FAILED
