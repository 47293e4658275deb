"""Memory and time to the first training step as a dataset grows: vlmtune against the plain TRL script.

    python bench/data_scale.py [--sizes 2000,8000,32000] [--out bench/data_scale.json] [--sides vlmtune,trl,check]

A ChartQA-shaped parquet (query, label, image: a ~48 KB PNG per row, noise so it does not compress away) is
written at each size; then, each in a fresh process with a fresh datasets cache (no side reuses another's
Arrow copy):
  vlmtune  the engine on the demo VLM (demo-sft preset, data.path = the parquet, max_steps=1)
  trl      the plain TRL script: load_dataset(parquet) + batched map to TRL's conversational format + SFTTrainer
  check    `vlmtune data check FILE --task sft --json`
Peak RSS is the child's own (wait4's ru_maxrss); time is from starting the process to the end of step 1
(to exit for `check`). Target: vlmtune's peak within 1.2x of plain TRL at every size, growing no faster
with rows, and its first step no later.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIDE = 128  # 128 x 128 RGB noise: ~48 KB as PNG
ROW_GROUP = 500


def write_parquet(path: Path, rows: int, seed: int = 0) -> None:
    """Written a row group at a time, so making the 32k file does not hold 1.5 GB of PNGs."""
    import io

    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string"))})
    schema = features.arrow_schema  # with datasets' metadata: the image column reads back as Image, as on the hub
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            images = []
            for _ in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)).save(buf, "PNG")
                images.append({"bytes": buf.getvalue(), "path": None})
            idx = range(start, start + n)
            table = pa.Table.from_pydict({
                "image": images, "query": [f"What is the value of bar {i % 5} in chart {i}?" for i in idx],
                "label": [[str(i % 10)] for i in idx]}, schema=schema)
            writer.write_table(table)
    tmp.replace(path)


# ---------------------------------------------------------------- children (one measurement each)


def _first_step_callback():
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if state.global_step == 1:
                print(f"FIRST_STEP {time.time()}", flush=True)

    return FirstStep()


def child_vlmtune(data: Path, demo: Path, work: Path) -> None:
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training
    from trainer_core.run.headless import quiet_libraries

    quiet_libraries()
    preset = load_preset(demo / "presets" / "demo-sft.yaml", [
        f"output_dir={work / 'runs'}", f"data.path={data}", "data.eval_fraction=0", "training.max_steps=1",
        "samples.every_steps=0", "samples.prompts=[]", "training.save_steps=1000"])
    result = run_training(preset, callbacks=[_first_step_callback()], fit_check=False)
    assert result.status == "completed", result.error


def child_trl(data: Path, demo: Path, work: Path) -> None:
    """What a TRL user writes by hand for the same data and model."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("parquet", data_files=str(data), split="train")
    ds = ds.cast_column("image", datasets.Image(decode=False))  # not decoded just to be copied

    def to_trl(batch):  # noqa: ANN001, ANN202
        return {"prompt": [[{"role": "user", "content": q}] for q in batch["query"]],
                "completion": [[{"role": "assistant", "content": label[0]}] for label in batch["label"]],
                "images": [[image] for image in batch["image"]]}

    ds = ds.map(to_trl, batched=True, remove_columns=ds.column_names)
    ds = ds.cast_column("images", datasets.List(datasets.Image()))
    model_path = str(demo / "model")
    model = AutoModelForImageTextToText.from_pretrained(model_path)
    processor = AutoProcessor.from_pretrained(model_path)
    args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=4, max_steps=1, max_length=128,
                     learning_rate=3e-3, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                     dataloader_pin_memory=False, bf16=False, fp16=False, activation_checkpointing=False)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor, peft_config=lora,
                         callbacks=[_first_step_callback()])
    trainer.train()


# ---------------------------------------------------------------- parent


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float | int | None]:
    """Run one child; its peak RSS from the kernel (ru_maxrss of that process alone) and its times."""
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    # wait4 reaps the child with its own resource use; communicate() first would reap it without.
    out_lines: list[str] = []
    err_text = ""
    import threading

    def drain() -> None:
        nonlocal err_text
        err_text = proc.stderr.read()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    for line in proc.stdout:
        out_lines.append(line)
    _pid, status, usage = os.wait4(proc.pid, 0)
    end = time.time()
    t.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    first = next((float(ln.split()[1]) for ln in out_lines if ln.startswith("FIRST_STEP ")), None)
    if proc.returncode not in (0, 1):
        sys.stderr.write(err_text[-3000:])
    return {"rc": proc.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "first_step_s": round(first - start, 2) if first else None, "total_s": round(end - start, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,8000,32000", help="rows per file, comma-separated")
    ap.add_argument("--sides", default="vlmtune,trl,check")
    ap.add_argument("--out", default=str(ROOT / "bench" / "data_scale.json"))
    ap.add_argument("--work", help="folder for the files (default: a new temp folder)")
    ap.add_argument("--child", choices=["vlmtune", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--demo", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        fn = child_vlmtune if a.child == "vlmtune" else child_trl
        fn(Path(a.data), Path(a.demo), Path(a.work))
        return

    work = Path(a.work or tempfile.mkdtemp(prefix="vlmtune-datascale-"))
    work.mkdir(parents=True, exist_ok=True)
    from trainer_core.demo import build_demo

    demo = work / "demo"
    if not (demo / "presets" / "demo-sft.yaml").exists():
        build_demo(demo)
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    results = []
    print(f"{'rows':>7} {'side':<8} {'peak RSS MB':>12} {'first step s':>13} {'total s':>8} rc", flush=True)
    for rows in sizes:
        data = work / f"chartqa_{rows}.parquet"
        if not data.exists():
            write_parquet(data, rows)
        for side in sides:
            run_dir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=work))
            env = {**os.environ, "HF_DATASETS_CACHE": str(run_dir / "datasets-cache"),
                   "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
            if side == "check":
                argv = [sys.executable, "-m", "tui.cli", "data", "check", str(data), "--task", "sft", "--json"]
            else:
                argv = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--data", str(data),
                        "--demo", str(demo), "--work", str(run_dir)]
            r = {"rows": rows, "side": side, "file_mb": round(data.stat().st_size / 2**20, 1), **measure(argv, env)}
            results.append(r)
            print(f"{rows:>7} {side:<8} {r['peak_rss_mb']:>12} {r['first_step_s'] or '-':>13} {r['total_s']:>8} "
                  f"{r['rc']}", flush=True)
            subprocess.run(["rm", "-rf", str(run_dir)], check=False)
    by = {(r["rows"], r["side"]): r for r in results}
    summary = []
    for rows in sizes:
        ours, theirs = by.get((rows, "vlmtune")), by.get((rows, "trl"))
        if ours and theirs and ours["rc"] == 0 and theirs["rc"] == 0:
            s = {"rows": rows, "rss_ratio": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
                 "first_step_ratio": (round(ours["first_step_s"] / theirs["first_step_s"], 3)
                                      if ours["first_step_s"] and theirs["first_step_s"] else None)}
            summary.append(s)
            print(f"{rows:>7} vlmtune/TRL: peak RSS {s['rss_ratio']}x (target <= 1.2x), first step "
                  f"{s['first_step_ratio']}x (target <= 1.0x)")
    Path(a.out).write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
