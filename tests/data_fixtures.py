"""Datasets in every shape users bring, and broken ones, written by the tests into a temp folder.

`FORMATS` and `BROKEN` name each case with what detection and validation must report for it.
Images are the demo's charts (copied), so VLM cases also train on the tiny demo model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    path: str  # relative to the fixture root
    format: str
    rows: int
    mapping: dict[str, str]
    images: int = 0  # rows with images
    options: dict[str, Any] = field(default_factory=dict)  # extra DataSection fields (relative paths)


@dataclass(frozen=True)
class Broken:
    name: str
    task: str
    path: str
    problem: str  # the problem's text, as str(DataProblem) shows it (line/row, column, message)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def build(root: Path, demo_images: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / "images"
    img_dir.mkdir(exist_ok=True)
    charts = sorted(demo_images.glob("chart_*.png"))[:4]
    for c in charts:
        shutil.copy(c, img_dir / c.name)
    a, b = "images/" + charts[0].name, "images/" + charts[1].name
    qa = [("What is the value of B?", "7"), ("Which bar is the highest?", "C"), ("What is the value of A?", "3")]

    # --- SFT
    _jsonl(root / "trl_messages.jsonl", [
        {"images": [a], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
            {"role": "assistant", "content": [{"type": "text", "text": ans}]}]} for q, ans in qa])
    (root / "sharegpt.json").write_text(json.dumps([
        {"image": b, "conversations": [{"from": "system", "value": "Answer briefly."},
                                       {"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": ans}]}
        for q, ans in qa]))
    llava = root / "llava"
    llava.mkdir(exist_ok=True)
    (llava / "llava_instruct.json").write_text(json.dumps([
        {"id": str(i), "image": charts[i].name,
         "conversations": [{"from": "human", "value": f"{q}\n<image>"}, {"from": "gpt", "value": ans}]}
        for i, (q, ans) in enumerate(qa)]))
    import pandas as pd

    pd.DataFrame({
        "image": [{"bytes": _png_bytes(charts[i]), "path": None} for i in range(3)],
        "query": [q for q, _ in qa], "label": [[ans] for _, ans in qa],
        "human_or_machine": [0, 1, 0],
    }).to_parquet(root / "chartqa.parquet")
    pd.DataFrame({"question": [q for q, _ in qa], "answer": [ans for _, ans in qa]}).to_csv(root / "qa.csv", index=False)
    (root / "alpaca.json").write_text(json.dumps([
        {"instruction": "Answer the question about the chart.", "input": f"A=3, B=7. {q}", "output": ans}
        for q, ans in qa]))
    _jsonl(root / "prompt_completion.jsonl", [{"prompt": q, "completion": ans} for q, ans in qa])
    _jsonl(root / "text.jsonl", [{"text": f"{q} {ans}"} for q, ans in qa])
    folder = root / "imagefolder"
    folder.mkdir(exist_ok=True)
    for c in charts[:3]:
        shutil.copy(c, folder / c.name)
    _jsonl(folder / "metadata.jsonl", [{"file_name": charts[i].name, "question": q, "answer": ans}
                                       for i, (q, ans) in enumerate(qa)])
    import datasets

    datasets.Dataset.from_dict({"prompt": [q for q, _ in qa], "completion": [ans for _, ans in qa]}).save_to_disk(
        str(root / "saved"))

    # --- DPO
    _jsonl(root / "preference_conv.jsonl", [
        {"images": [a], "prompt": [{"role": "user", "content": q}],
         "chosen": [{"role": "assistant", "content": ans}],
         "rejected": [{"role": "assistant", "content": "The image does not provide that information."}]}
        for q, ans in qa])
    pd.DataFrame({
        "ds_name": ["chart"] * 3, "image": [{"bytes": _png_bytes(charts[i]), "path": None} for i in range(3)],
        "question": [q for q, _ in qa], "chosen": [ans for _, ans in qa], "rejected": ["9", "A", "8"],
        "origin_dataset": ["synthetic"] * 3, "idx": [0, 1, 2],
    }).to_parquet(root / "rlaif_v.parquet")
    pd.DataFrame({"prompt": [f"A=3, B=7, C=9. {q}" for q, _ in qa], "chosen": [ans for _, ans in qa],
                  "rejected": ["1", "A", "2"]}).to_csv(root / "text_pairs.csv", index=False)
    _jsonl(root / "implicit.jsonl", [
        {"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}],
         "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "no idea"}]}
        for q, ans in qa])

    # --- broken
    bad = root / "broken"
    bad.mkdir(exist_ok=True)
    (bad / "empty.jsonl").write_text("")
    (bad / "bad_line.jsonl").write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q" "completion": "a"}\n')
    _jsonl(bad / "no_columns.jsonl", [{"foo": 1, "bar": 2}])
    _jsonl(bad / "missing_image.jsonl", [
        {"image": "nope.png", "question": "q?", "answer": "a"}, {"image": "nope.png", "question": "q?", "answer": "a"}])
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    _jsonl(bad / "corrupt_image.jsonl", [{"image": "corrupt.png", "question": "q?", "answer": "a"}])
    _jsonl(bad / "empty_answer.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": "  "}])
    _jsonl(bad / "same_pair.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                    {"prompt": "q", "chosen": "a", "rejected": "a"}])
    _jsonl(bad / "last_turn.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                   {"role": "assistant", "content": "hello"},
                                                   {"role": "user", "content": "and?"}]}])
    shutil.copy(charts[0], bad / "chart.png")
    _jsonl(bad / "placeholders.jsonl", [{"image": "chart.png", "conversations": [
        {"from": "human", "value": "<image> <image> compare"}, {"from": "gpt", "value": "same"}]}])
    _jsonl(bad / "bad_role.jsonl", [{"messages": [{"role": "narrator", "content": "x"},
                                                  {"role": "assistant", "content": "y"}]}])
    return root


FORMATS: list[Case] = [
    Case("trl_messages", "sft", "trl_messages.jsonl", "messages", 3, {"messages": "messages", "images": "images"}, 3),
    Case("sharegpt", "sft", "sharegpt.json", "messages", 3, {"messages": "conversations", "images": "image"}, 3),
    Case("llava", "sft", "llava/llava_instruct.json", "messages", 3, {"messages": "conversations", "images": "image"},
         3, {"image_dir": "images"}),
    Case("chartqa", "sft", "chartqa.parquet", "question_answer", 3,
         {"prompt": "query", "completion": "label", "images": "image"}, 3),
    Case("qa_csv", "sft", "qa.csv", "question_answer", 3, {"prompt": "question", "completion": "answer"}),
    Case("alpaca", "sft", "alpaca.json", "alpaca", 3, {"prompt": "instruction", "completion": "output",
                                                        "input": "input"}),
    Case("prompt_completion", "sft", "prompt_completion.jsonl", "prompt_completion", 3,
         {"prompt": "prompt", "completion": "completion"}),
    Case("text", "sft", "text.jsonl", "text", 3, {"text": "text"}),
    Case("imagefolder", "sft", "imagefolder", "question_answer", 3,
         {"prompt": "question", "completion": "answer", "images": "image"}, 3),
    Case("save_to_disk", "sft", "saved", "prompt_completion", 3, {"prompt": "prompt", "completion": "completion"}),
    Case("preference_conv", "dpo", "preference_conv.jsonl", "preference", 3,
         {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "images": "images"}, 3),
    Case("rlaif_v", "dpo", "rlaif_v.parquet", "preference", 3,
         {"prompt": "question", "chosen": "chosen", "rejected": "rejected", "images": "image"}, 3),
    Case("text_pairs", "dpo", "text_pairs.csv", "preference", 3,
         {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
    Case("implicit", "dpo", "implicit.jsonl", "implicit_preference", 3, {"chosen": "chosen", "rejected": "rejected"}),
]

BROKEN: list[Broken] = [
    Broken("missing_file", "sft", "broken/nothing-here.jsonl", "file not found"),
    Broken("empty_file", "sft", "broken/empty.jsonl", "the file is empty"),
    Broken("bad_line", "sft", "broken/bad_line.jsonl", "line 2: line 2 is not valid JSON"),
    Broken("no_columns", "sft", "broken/no_columns.jsonl", "no columns fit sft: found foo, bar"),
    Broken("missing_image", "sft", "broken/missing_image.jsonl", "line 2, column 'image': image not found"),
    Broken("corrupt_image", "sft", "broken/corrupt_image.jsonl",
           "line 1, column 'image': image does not decode: "),
    Broken("empty_answer", "sft", "broken/empty_answer.jsonl", "line 2, column 'completion': is empty"),
    Broken("same_pair", "dpo", "broken/same_pair.jsonl",
           "line 2, column 'rejected': chosen and rejected are identical"),
    Broken("last_turn", "sft", "broken/last_turn.jsonl",
           "line 1, column 'messages': the last turn is not the assistant's"),
    Broken("placeholders", "sft", "broken/placeholders.jsonl",
           "line 1, column 'image': the text has 2 <image> placeholders but the row has 1 image"),
    Broken("bad_role", "sft", "broken/bad_role.jsonl", "line 1, column 'messages': turn 0 has role 'narrator'"),
]
