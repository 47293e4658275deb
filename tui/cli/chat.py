"""`vlmtune chat`: one answer with --prompt, else the chat pane (tuned beside base)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer_core.base.errors import EXIT_OK, UsageError
from tui.cli.common import quiet_libraries


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("chat", help="ask a model (base or base + adapter) one question")
    p.add_argument("--model", help="base model folder or hub id (default: the adapter's base)")
    p.add_argument("--adapter", help="run directory or adapter folder")
    p.add_argument("--prompt", help="the question")
    p.add_argument("--image", help="an image file, for vision-language models")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.prompt is None:
        if not args.model and not args.adapter:
            raise UsageError("give --model (a base model) and/or --adapter (a run directory)")
        from tui.chat.app import ChatApp

        ChatApp(args.model, args.adapter, args.trust_remote_code).run()
        return EXIT_OK
    if args.image and not Path(args.image).is_file():
        raise UsageError(f"image not found: {args.image}")
    quiet_libraries()
    from trainer_core.chat import GenerationSettings, generate, load_for_chat

    loaded = load_for_chat(args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    if args.image and not loaded.is_vlm:
        raise UsageError("this is a text-only model: --image needs a vision-language model")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    print(generate(loaded.model, loaded.processing_class, loaded.is_vlm, args.prompt, args.image, settings))
    return EXIT_OK
