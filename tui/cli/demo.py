"""`vlmtune demo`: build the tiny offline demo (model, data, presets), then open the app on it or train it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer_core.base.errors import EXIT_OK
from tui.cli.common import add_set, load_preset, quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("demo", help="build the tiny offline demo (model, data, presets)")
    p.add_argument("--out", default="vlmtune-demo", help="folder (default: ./vlmtune-demo)")
    p.add_argument("--headless", action="store_true", help="also train demo-sft and demo-dpo")
    p.add_argument("--force", action="store_true", help="rebuild it even if it is built (only a folder that is a demo)")
    p.add_argument("--no-app", action="store_true", help="only build it and print what it made")
    add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer_core.demo import build_demo, check_demo_folder, demo_paths, is_built

    root = Path(args.out).expanduser()
    paths = demo_paths(root)
    check_demo_folder(root)  # before anything loads: a folder of the user's is refused, --force or not
    if args.force or not is_built(root):
        quiet_libraries()
        print(f"building the tiny demo in {paths.root} ...", file=sys.stderr)
        # The app trains in a thread worker: torch work in the main thread would slow it (trainer_core.base.threads).
        from trainer_core.base.threads import in_passing_thread

        in_passing_thread(build_demo, root)
    else:
        print(f"using the demo in {paths.root} (--force rebuilds it)", file=sys.stderr)
    if args.headless:
        return train_demos(paths, args.set, debug=args.debug)
    if not args.no_app:
        from tui.wizard.app import run_app, user_presets_dir

        run_app(preset_folders=[paths.presets, Path("presets"), user_presets_dir()],
                run_folders=[paths.runs, Path("runs")], presets_dir=Path("presets"))
        return EXIT_OK
    print(f"tiny demo ready in {paths.root}:\n"
          f"  model       {paths.model}  (SmolVLM architecture, random init)\n"
          f"  text model  {paths.text_model}\n"
          f"  data        {paths.data}\n"
          f"  presets     {', '.join(sorted(p.name for p in paths.presets.glob('*.yaml')))}\n"
          f"train one:    vlmtune train {paths.presets / 'demo-sft.yaml'} --headless\n"
          f"or all:       vlmtune demo --headless")
    return EXIT_OK


def train_demos(paths, sets: list[str], *, debug: bool) -> int:  # noqa: ANN001
    """The SFT and DPO demos, headless, one after the other; the worst exit code."""
    from tui.cli.train import train

    code = EXIT_OK
    for name in ("demo-sft", "demo-dpo"):
        preset = load_preset(paths.presets / f"{name}.yaml", sets)
        code = max(code, train(preset, None, headless=True, debug=debug))
    return code
