"""`vlmtune eval RUN_DIR`: did it help? The tuned adapter against its base on the run's held-out rows."""

from __future__ import annotations

import argparse
import json
import sys

from trainer_core.base.errors import EXIT_OK, UsageError
from tui.cli.common import quiet_libraries

# Listed here, not imported from trainer_core.eval.metrics: --help must stay instant (it names them)
METRICS = ("exact_match", "relaxed_accuracy", "anls", "token_f1", "rouge_l", "preference_accuracy")


def register(sub) -> None:  # noqa: ANN001
    p = sub.add_parser("eval", help="score a run's adapter against its base model on held-out rows",
                       description="Answer the run's held-out rows (or --data) with the base model and with the "
                                   "tuned adapter; write eval.json and eval_samples.jsonl into the run folder.")
    p.add_argument("run_dir", help="the run folder (it holds preset.yaml and adapter/)")
    p.add_argument("--data", help="rows to score instead of the run's held-out rows (in the run's data format)")
    p.add_argument("--limit", type=int, help="score only the first N rows")
    p.add_argument("--metric", help=f"one of {', '.join(METRICS)} (default: chosen from the answers)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, help="answer length (default: longest reference + 8 tokens)")
    p.add_argument("--json", action="store_true", help="print eval.json's object instead of a table")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(report: dict) -> str:
    b, t = report["base"], report["tuned"]
    ci = report.get("ci") or [None, None]
    lines = [f"{report['metric']} on {report['n']} held-out rows ({report['source']})",
             f"  base   {_fmt(b['score'])}  95% CI [{_fmt((b['ci'] or [None])[0])}, {_fmt((b['ci'] or [None, None])[1])}]",
             f"  tuned  {_fmt(t['score'])}  95% CI [{_fmt((t['ci'] or [None])[0])}, {_fmt((t['ci'] or [None, None])[1])}]",
             f"  delta  {report['delta']:+.3f}  95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}] (paired bootstrap)"]
    if "reward_accuracy" in report:
        lines.append(f"  reward accuracy {_fmt(report['reward_accuracy']['score'])}, "
                     f"mean margin {_fmt(report['mean_margin']['score'])} (tuned vs base, chosen vs rejected)")
    lines.append(f"  {report['rows_per_second']} rows/s (both models)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a number of rows of at least 1 (or leave it out for all)")
    quiet_libraries()
    from trainer_core.eval.evaluate import evaluate_run

    bar = _Bar()
    try:
        result = evaluate_run(args.run_dir, data=args.data, limit=args.limit, metric=args.metric,
                              batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=bar,
                              trust_remote_code=args.trust_remote_code)
    finally:
        bar.close()
    if result.partial:
        print(f"interrupted: scored {result.report['n']} of {result.report['rows_available']} rows; "
              f"partial results written to {result.eval_json}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        print(_table(result.report))
        print(f"written: {result.eval_json}, {result.samples_path}", file=sys.stderr)
    return 130 if result.partial else EXIT_OK


class _Bar:
    """Rows done on stderr: a live line on a terminal, a few plain lines in a log."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False
        self.last_pct = -1

    def __call__(self, p) -> None:  # noqa: ANN001
        rate = p.done / p.seconds if p.seconds > 0 else 0.0
        width = 24
        filled = int(width * p.done / p.total) if p.total else width
        line = f"eval {'━' * filled}{' ' * (width - filled)} {p.done}/{p.total} rows  {rate:.1f} rows/s"
        if self.tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
            self.shown = True
        elif (pct := 100 * p.done // max(1, p.total) // 25) > self.last_pct:  # every quarter
            self.last_pct = pct
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)
