"""Every dataset shape users bring: detected, mapped and counted; every broken one reported with its row,
line and column; and one short training run per family to prove TRL trains on what we produce."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from data_fixtures import BROKEN, FORMATS, build

from trainer_core.data.check import check_data


@pytest.fixture(scope="module")
def fixtures(demo, tmp_path_factory):
    return build(tmp_path_factory.mktemp("formats"), demo.data / "images")


def _opts(case, root):
    return {k: str(root / v) for k, v in case.options.items()}


@pytest.mark.parametrize("case", FORMATS, ids=lambda c: c.name)
def test_format_is_detected_mapped_and_valid(fixtures, case):
    report = check_data(str(fixtures / case.path), case.task, **_opts(case, fixtures))
    assert report.problems == [] and report.ok
    assert report.format == case.format
    assert report.rows == case.rows == report.valid_rows
    assert report.columns == case.mapping
    assert report.images["rows_with_images"] == case.images


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_broken_data_is_reported_with_row_and_column(fixtures, case):
    report = check_data(str(fixtures / case.path), case.task)
    assert not report.ok
    shown = [str(p) for p in report.problems]
    assert any(case.problem in s for s in shown), shown


def test_a_bad_row_among_good_ones_is_the_only_problem(fixtures):
    report = check_data(str(fixtures / "broken" / "empty_answer.jsonl"), "sft")
    assert report.rows == 2 and report.valid_rows == 1 and len(report.problems) == 1
    assert report.problems[0].row == 1 and report.problems[0].line == 2 and report.problems[0].column == "completion"


def test_corrupt_image_names_the_file(fixtures):
    report = check_data(str(fixtures / "broken" / "corrupt_image.jsonl"), "sft")
    assert "corrupt.png" in report.problems[0].message


def test_columns_override_detection(fixtures, tmp_path):
    f = tmp_path / "odd.jsonl"
    f.write_text(json.dumps({"ask": "What is B?", "reply": "7", "pic": str(fixtures / "images" / "chart_000.png")})
                 + "\n")
    report = check_data(str(f), "sft", columns={"prompt": "ask", "completion": "reply", "images": "pic"})
    assert report.ok and report.format == "prompt_completion"
    assert report.columns == {"prompt": "ask", "completion": "reply", "images": "pic"}


def test_llamafactory_folder_checks_by_entry_name(tmp_path):
    """A LLaMA-Factory data folder: the entry's columns (system, history) reach the rows, nothing is ignored."""
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "weather": {"file_name": "w.json", "columns": {"prompt": "instruction", "query": "input",
                                                       "response": "output", "system": "system",
                                                       "history": "history"}},
        "other": {"file_name": "w.json"}}))
    (tmp_path / "w.json").write_text(json.dumps([{"instruction": "And Paris?", "input": "", "output": "Rainy",
                                                  "system": "Weather bot.", "history": [["Rome?", "Sunny"]]}]))
    report = check_data(str(tmp_path), "sft", subset="weather")
    assert report.ok and report.format == "alpaca"
    assert report.columns["system"] == "system" and report.columns["history"] == "history"
    assert report.previews[0].split("\n") == ["system: Weather bot.", "user: Rome?", "assistant: Sunny",
                                               "user: And Paris?", "assistant: Rainy"]


def test_preview_through_the_chat_template(fixtures, demo):
    report = check_data(str(fixtures / "sharegpt.json"), "sft", model=str(demo.model), preview=1)
    text = report.previews[0]
    assert text.startswith("<|im_start|>System: Answer briefly.") and "<image>" in text
    assert "Assistant: 7<end_of_utterance>" in text
    assert report.stats.token_source == "tokenizer"
    assert report.images["tokens_per_image"] == 1  # the demo processor: one 32px tile, 1 token


def test_stats_for_the_planner(fixtures):
    report = check_data(str(fixtures / "chartqa.parquet"), "sft")
    s = report.stats
    assert s.rows == 3 and s.images_per_row == 1.0
    assert s.image_width.max == 64 and s.answer_tokens.max >= 1 and s.prompt_tokens.p95 >= s.prompt_tokens.p50


def vlmtune(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_exit_codes_and_json(fixtures):
    ok = vlmtune("data", "check", str(fixtures / "rlaif_v.parquet"), "--task", "dpo", "--json")
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)
    assert {"ok", "format", "rows", "columns", "images", "problems", "stats"} <= d.keys()
    assert d["ok"] and d["format"] == "preference" and d["rows"] == 3 and d["problems"] == []
    bad = vlmtune("data", "check", str(fixtures / "broken" / "same_pair.jsonl"), "--task", "dpo", "--json")
    assert bad.returncode == 1
    problem = json.loads(bad.stdout)["problems"][0]
    assert problem["row"] == 1 and problem["line"] == 2 and problem["column"] == "rejected"
    human = vlmtune("data", "check", str(fixtures / "broken" / "missing_image.jsonl"), "--task", "sft")
    assert human.returncode == 1 and "image not found" in human.stdout and "Traceback" not in human.stderr
    usage = vlmtune("data", "check", str(fixtures / "qa.csv"), "--task", "sft", "--columns", "prompt")
    assert usage.returncode == 2 and "role=column pairs" in usage.stderr
    usage = vlmtune("data", "check", str(fixtures / "qa.csv"))
    assert usage.returncode == 2 and "--task" in usage.stderr


TRAIN_CASES = [
    ("chartqa", "demo-sft"),  # VLM SFT, images as embedded bytes
    ("sharegpt", "demo-sft"),  # VLM SFT, ShareGPT turns with <image> and a system turn
    ("rlaif_v", "demo-dpo"),  # VLM DPO, RLAIF-V columns
    ("alpaca", "demo-text-sft"),  # text SFT
    ("text_pairs", "demo-text-dpo"),  # text DPO from CSV
]


@pytest.mark.slow
@pytest.mark.parametrize(("case_name", "preset"), TRAIN_CASES)
def test_trl_trains_on_each_family(fixtures, demo_preset, case_name, preset):
    from trainer_core.run.engine import run_training

    case = next(c for c in FORMATS if c.name == case_name)
    p = demo_preset(preset, f"data.path={fixtures / case.path}", "data.eval_fraction=0", "training.max_steps=2",
                    "training.micro_batch_size=2", "samples.every_steps=0")
    result = run_training(p)
    assert result.status == "completed", result.error
    assert result.steps == 2 and result.final_loss is not None
