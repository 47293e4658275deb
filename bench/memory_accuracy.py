"""Predicted vs measured training memory, over random-init models of real shapes (needs a CUDA GPU).

    python bench/memory_accuracy.py [--cases 0,3,5] [--steps 3] [--json out.json]

Each case builds a model of a registry shape (random weights, built from its config: nothing is
downloaded), a tokenizer/processor and data with exact token counts and image sizes, and trains it
for a few steps through vlmtune's own engine (TRL + PEFT + bitsandbytes) in a fresh process. The
peak of torch.cuda.max_memory_allocated() is compared with trainer_core.plan.memory's prediction for the
same settings and the same measured sequence length. Prints a table with the error per row.
`--smoke` runs the plumbing on the CPU with the tiny demo shapes (no figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GIB = 2**30

CASES: list[dict] = [
    # SmolVLM shapes: images split into tiles, as the real processor does
    dict(model="HuggingFaceTB/SmolVLM-256M-Instruct", task="sft", b=4, text=256, image=512),
    dict(model="HuggingFaceTB/SmolVLM-256M-Instruct", task="sft", b=4, text=256, image=512, gc=True),
    dict(model="HuggingFaceTB/SmolVLM-256M-Instruct", task="dpo", b=2, text=256, image=512),
    dict(model="HuggingFaceTB/SmolVLM-256M-Instruct", task="sft", b=4, text=256, image=512, quant="4bit"),
    dict(model="HuggingFaceTB/SmolVLM-Instruct", task="sft", b=2, text=512, image=768),
    dict(model="HuggingFaceTB/SmolVLM-Instruct", task="sft", b=2, text=512, image=768, quant="4bit", gc=True),
    dict(model="HuggingFaceTB/SmolVLM-Instruct", task="dpo", b=1, text=512, image=768),
    # text models: a large vocabulary (Qwen 152k) makes the logits dominate
    dict(model="Qwen/Qwen2.5-0.5B-Instruct", task="sft", b=8, text=512),
    dict(model="Qwen/Qwen2.5-0.5B-Instruct", task="sft", b=4, text=512, lora=False),
    dict(model="Qwen/Qwen2.5-0.5B-Instruct", task="dpo", b=4, text=512),
    dict(model="Qwen/Qwen2.5-1.5B-Instruct", task="sft", b=4, text=1024, gc=True),
    dict(model="Qwen/Qwen2.5-1.5B-Instruct", task="sft", b=4, text=1024, quant="8bit"),
    dict(model="meta-llama/Llama-3.2-3B-Instruct", task="sft", b=2, text=2048),
    dict(model="meta-llama/Llama-3.2-3B-Instruct", task="sft", b=2, text=2048, quant="4bit", gc=True),
    # held out: not used to fit the coefficients in trainer_core/memory.py
    dict(model="Qwen/Qwen2.5-3B-Instruct", task="sft", b=4, text=1024),
    dict(model="meta-llama/Llama-3.2-1B-Instruct", task="sft", b=8, text=2048, gc=True),
    dict(model="HuggingFaceTB/SmolVLM-500M-Instruct", task="sft", b=2, text=512, image=768),
    dict(model="HuggingFaceTB/SmolVLM-500M-Instruct", task="dpo", b=1, text=256, image=512, quant="4bit"),
    dict(model="Qwen/Qwen2.5-1.5B-Instruct", task="sft", b=2, text=512, lora=False, ga=4),
    dict(model="Qwen/Qwen2.5-7B-Instruct", task="sft", b=1, text=1024, quant="4bit", gc=True),
    # LoRA dropout (the preset default is 0.05): its masks and outputs
    dict(model="HuggingFaceTB/SmolVLM-256M-Instruct", task="sft", b=4, text=256, image=512, dropout=0.05),
    dict(model="Qwen/Qwen2.5-0.5B-Instruct", task="sft", b=8, text=512, dropout=0.05),
    dict(model="meta-llama/Llama-3.2-3B-Instruct", task="sft", b=2, text=2048, dropout=0.05),
    dict(model="meta-llama/Llama-3.2-3B-Instruct", task="sft", b=2, text=2048, quant="4bit", gc=True, dropout=0.05),
]

SMOKE_CASES: list[dict] = [
    dict(model="demo", task="sft", b=2, text=32, image=64),
    dict(model="demo", task="dpo", b=2, text=32, image=64),
    dict(model="demo-text", task="sft", b=2, text=32, lora=False),
]


# ----------------------------------------------------------------------------- building blocks


WORDS = [a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]


def word_tokenizer():
    """A byte-level BPE trained on two-letter words, so that ` ab cd ...` is one token per word, also when
    transformers rebuilds it from vocab + merges as a model-specific class (Qwen2Tokenizer does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer_core.demo import CHAT_TEMPLATE, SPECIAL_TOKENS

    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIAL_TOKENS + rows, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 26)] * 3
    corpus += ["User: Assistant: System:"] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                                   pad_token="<|pad|>", unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
                                   additional_special_tokens=SPECIAL_TOKENS[1:6] + rows)


def build_model_dir(model_id: str, out: Path, device: str) -> Path:
    """A random-init model of the registry shape, saved with a tokenizer (and processor for VLMs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from trainer_core.model.known import known_config

    out.mkdir(parents=True, exist_ok=True)
    if (out / "config.json").exists():
        return out
    config = known_config(model_id)
    tok = word_tokenizer()
    is_vlm = getattr(config, "vision_config", None) is not None
    if is_vlm:
        if config.model_type != "idefics3":
            raise SystemExit(f"{model_id}: only Idefics3/SmolVLM processors are built here")
        from transformers import Idefics3ImageProcessorPil, Idefics3Processor

        v = config.vision_config
        seq = (v.image_size // v.patch_size) ** 2 // config.scale_factor**2
        ip = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 4 * v.image_size},
                                       max_image_size={"longest_edge": v.image_size})
        proc = Idefics3Processor(ip, tok, image_seq_len=seq, chat_template=tok.chat_template)
        config.image_token_id = proc.image_token_id
        auto = AutoModelForImageTextToText
    else:
        proc = tok
        auto = AutoModelForCausalLM
    with torch.device(device):
        model = auto.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def words(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def make_data(case: dict, out: Path) -> Path:
    """Rows whose prompt and answer have exactly the case's token counts (half each)."""
    from PIL import Image

    rows = []
    half = case["text"] // 2
    image = None
    if case.get("image"):
        import numpy as np

        image = out / "image.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (case["image"], case["image"], 3), dtype=np.uint8)).save(image)
    for i in range(64):
        row = {"prompt": words(half, i), "completion": words(half, i + 7)}
        if case["task"] == "dpo":
            row = {"prompt": words(half, i), "chosen": words(half, i + 7), "rejected": words(half, i + 13)}
        if image:
            row["images"] = [str(image)]
        rows.append(row)
    path = out / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def measured_lengths(model_dir: Path, data: Path, case: dict) -> dict:
    """Tokens per sample and image tiles, by the real processor: the estimator gets the same inputs."""
    from transformers import AutoProcessor, AutoTokenizer

    row = json.loads(data.read_text().splitlines()[0])
    answer = row.get("completion") or row.get("chosen")
    if case.get("image"):
        from PIL import Image

        proc = AutoProcessor.from_pretrained(model_dir)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["prompt"]}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        text = proc.apply_chat_template(msgs)
        enc = proc(text=[text], images=[[Image.open(row["images"][0]).convert("RGB")]], return_tensors="pt")
        ids = enc["input_ids"][0]
        image_tokens = int((ids == proc.image_token_id).sum())
        tiles = int(enc["pixel_values"].shape[1])
        return {"seq_len": int(ids.shape[0]), "image_tokens": image_tokens, "tiles": tiles}
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                   {"role": "assistant", "content": answer}], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return {"seq_len": len(ids), "image_tokens": 0, "tiles": 0}


def predict(case: dict, model_dir: Path | str, lengths: dict, precision: str) -> dict:
    from trainer_core.model.info import inspect_model
    from trainer_core.plan.memory import TrainSettings, estimate_memory

    info = inspect_model(str(model_dir))
    v = info.vision
    patches_per_tile = (v.image_size // v.patch_size) ** 2 if v and v.image_size and v.patch_size else 0
    s = TrainSettings(
        task=case["task"], precision=precision, quantization=case.get("quant", "none"), lora=case.get("lora", True),
        lora_dropout=case.get("dropout", 0.0),
        micro_batch_size=case["b"], gradient_accumulation_steps=case.get("ga", 1), text_tokens=lengths["seq_len"] - lengths["image_tokens"],
        answer_tokens=case["text"] // 2 + 2,  # the completion and its end-of-turn tokens carry the loss
        images_per_sample=1.0 if case.get("image") else 0.0, image_tokens_per_image=lengths["image_tokens"],
        vision_patches_per_image=lengths["tiles"] * patches_per_tile, gradient_checkpointing=case.get("gc", False),
    )
    est = estimate_memory(info, s)
    return {"predicted": est.peak_allocated, "components": est.components, "required": est.required}


def run_case(index: int, case: dict, work: Path, steps: int, device: str) -> dict:
    """In this (fresh) process: build, train `steps` steps through the engine, measure the peak."""
    import torch

    from trainer_core.config.presets import preset_from_dict
    from trainer_core.events import EventStream, LogMessage
    from trainer_core.run.engine import run_training

    if case["model"].startswith("demo"):
        from trainer_core.demo import build_demo

        demo = build_demo(work / "demo")
        model_dir = demo.model if case["model"] == "demo" else demo.text_model
    else:
        model_dir = build_model_dir(case["model"], work / "models" / case["model"].replace("/", "--"), device)
    case_dir = work / f"case{index}"
    case_dir.mkdir(parents=True, exist_ok=True)
    data = make_data(case, case_dir)
    lengths = measured_lengths(model_dir, data, case)
    preset = preset_from_dict({
        "name": f"case{index}", "task": case["task"], "model": {"name_or_path": str(model_dir)},
        "data": {"path": str(data)}, "quantization": case.get("quant", "none"),
        "lora": {"enabled": case.get("lora", True), "r": 16, "alpha": 32, "dropout": case.get("dropout", 0.0)},
        "training": {"micro_batch_size": case["b"], "gradient_accumulation_steps": case.get("ga", 1), "max_steps": steps,
                     "max_length": lengths["seq_len"] + 64, "gradient_checkpointing": case.get("gc", False),
                     "save_steps": 10_000, "logging_steps": 1, "learning_rate": 1e-4},
        "output_dir": str(case_dir / "runs"),
    })
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warnings: list[str] = []
    events = EventStream()
    events.subscribe(lambda e: warnings.append(e.message) if isinstance(e, LogMessage) and e.level == "error" else None)
    result = run_training(preset, events=events)
    out = {"case": index, **case, **lengths, "status": result.status, "error": result.error}
    if device == "cuda":
        out["measured"] = torch.cuda.max_memory_allocated()
        out["reserved"] = torch.cuda.max_memory_reserved()
        out["free_total"] = torch.cuda.mem_get_info()
    precision = "bf16" if device == "cuda" else "fp32"
    out.update(predict(case, model_dir, lengths, precision))
    return out


# ----------------------------------------------------------------------------- driver


def table(rows: list[dict]) -> str:
    lines = [f"{'#':>2} {'model':34} {'task':4} {'quant':5} {'lora':4} {'gc':3} {'b':>2} {'seq':>5} "
             f"{'measured':>9} {'predicted':>9} {'error':>7}"]
    errors = []
    for r in rows:
        if r.get("status") != "completed" or "measured" not in r:
            lines.append(f"{r['case']:>2} {r['model'][-34:]:34} {r['task']:4} {r.get('status')}: {r.get('error')}")
            continue
        m, p = r["measured"], r["predicted"]
        err = (p - m) / m
        errors.append(abs(err))
        lines.append(f"{r['case']:>2} {r['model'][-34:]:34} {r['task']:4} {r.get('quant', 'none'):5} "
                     f"{'y' if r.get('lora', True) else 'n':4} {'y' if r.get('gc') else 'n':3} {r['b']:>2} "
                     f"{r['seq_len']:>5} {m / GIB:8.2f}G {p / GIB:8.2f}G {err:+7.1%}")
    if errors:
        lines.append(f"mean |error| {sum(errors) / len(errors):.1%}, max |error| {max(errors):.1%} over {len(errors)} runs")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", help="comma-separated case indices (default: all)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", help="write all rows (with components) to this file")
    ap.add_argument("--smoke", action="store_true", help="CPU plumbing check on the demo shapes")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repredict", help="recompute predictions for the rows of an earlier --json (no GPU)")
    a = ap.parse_args()
    cases = SMOKE_CASES if a.smoke else CASES
    device = "cpu" if a.smoke else "cuda"
    work = Path(a.work or tempfile.mkdtemp(prefix="vlmtune-mem-"))
    if a.child is not None and not a.repredict:
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        print("RESULT " + json.dumps(run_case(a.child, cases[a.child], work, a.steps, device), default=str))
        return
    if a.repredict:  # refit the model against earlier measurements without a GPU
        rows = json.loads(Path(a.repredict).read_text())
        for r in rows:
            model = r["model"] if not r["model"].startswith("demo") else r["model"]
            r.update(predict(r, model, r, "bf16"))
        print(table(rows))
        return
    chosen = [int(i) for i in a.cases.split(",")] if a.cases else list(range(len(cases)))
    rows = []
    for i in chosen:
        cmd = [sys.executable, __file__, "--child", str(i), "--steps", str(a.steps), "--work", str(work)]
        if a.smoke:
            cmd.append("--smoke")
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if found:
            row = json.loads(found[-1][7:])
        else:
            row = {"case": i, **cases[i], "status": "crashed", "error": proc.stderr.strip().splitlines()[-1:]}
        rows.append(row)
        print(f"case {i}: {row.get('status')} measured={row.get('measured')} predicted={row.get('predicted')}",
              flush=True)
        if a.json:  # after every case, so a run cut short keeps what it measured
            Path(a.json).write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))


if __name__ == "__main__":
    main()
