"""`vlmtune eval` on real (tiny) demo runs: what it writes, and the errors a user can cause."""

from __future__ import annotations

import json
import shutil

import pytest

from trainer_core.eval.evaluate import EVAL_JSON, EVAL_SAMPLES, evaluate_run
from trainer_core.run.engine import run_training
from tui.cli import main

pytestmark = pytest.mark.slow

REPORT_KEYS = {"n", "metric", "base", "tuned", "delta", "ci"}
SAMPLE_KEYS = {"prompt", "image", "reference", "base", "tuned", "base_score", "tuned_score"}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, demo):
    from trainer_core.config.presets import load_preset

    runs = tmp_path_factory.mktemp("eval-runs")
    preset = load_preset(demo.presets / "demo-sft.yaml",
                         [f"output_dir={runs}", "training.max_steps=3", "samples.every_steps=0"])
    result = run_training(preset)
    assert result.status == "completed", result.error
    return result.run_dir


def test_the_run_records_exactly_its_eval_split(sft_run, demo):
    held = [json.loads(x) for x in (sft_run / "heldout.jsonl").read_text().splitlines()]
    summary = json.loads((sft_run / "summary.json").read_text())
    assert len(held) == 10  # 10% of the demo's 96 rows
    assert summary["status"] == "completed"
    # The rows are the split the trainer held out: none of them is among the rows it trained on
    from trainer_core.config.presets import load_preset
    from trainer_core.data.prepare import prepare_dataset

    preset = load_preset(sft_run / "preset.yaml")
    data = prepare_dataset(preset.data, "sft", conversational=True, is_vlm=True, seed=preset.training.seed)
    key = lambda r: (r["images"][0], json.dumps(r["messages"]))  # noqa: E731
    from trainer_core.eval.heldout import rows_from_dataset

    assert {key(r) for r in held} == {key(r) for r in rows_from_dataset(data.eval)}
    assert not {key(r) for r in held} & {key(r) for r in rows_from_dataset(data.train)}


def test_eval_writes_the_report_and_samples_and_replaces_them(sft_run, capsys):
    assert main(["eval", str(sft_run), "--limit", "4", "--batch-size", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    written = json.loads((sft_run / EVAL_JSON).read_text())
    assert out == written and written.keys() >= REPORT_KEYS
    assert written["n"] == 4 and written["metric"] == "relaxed_accuracy" and not written["partial"]
    for side in ("base", "tuned"):
        assert {"score", "ci", "n"} <= written[side].keys() and 0.0 <= written[side]["score"] <= 1.0
    assert written["delta"] == pytest.approx(written["tuned"]["score"] - written["base"]["score"], abs=1e-6)
    samples = [json.loads(x) for x in (sft_run / EVAL_SAMPLES).read_text().splitlines()]
    assert len(samples) == 4 and all(s.keys() >= SAMPLE_KEYS for s in samples)
    assert samples[0]["image"].endswith(".png")

    # A second evaluation replaces both files whole (another metric, fewer rows)
    result = evaluate_run(sft_run, limit=2, metric="exact_match")
    again = json.loads((sft_run / EVAL_JSON).read_text())
    assert again == result.report and again["n"] == 2 and again["metric"] == "exact_match"
    assert len((sft_run / EVAL_SAMPLES).read_text().splitlines()) == 2
    assert not [p for p in sft_run.iterdir() if p.name.endswith(".tmp")]


def test_a_stop_keeps_what_is_done(sft_run):
    import threading

    stop = threading.Event()
    result = evaluate_run(sft_run, batch_size=2, progress=lambda p: stop.set(), stop=stop, write=False)
    assert result.partial and result.report["n"] == 2 and result.report["partial"]


def test_dpo_reports_preference_accuracy_and_margin(demo, tmp_path):
    from trainer_core.config.presets import load_preset

    preset = load_preset(demo.presets / "demo-dpo.yaml",
                         [f"output_dir={tmp_path}", "training.max_steps=2", "samples.every_steps=0"])
    result = run_training(preset)
    assert result.status == "completed", result.error
    report = evaluate_run(result.run_dir, limit=4).report
    assert report["metric"] == "preference_accuracy" and report["n"] == 4
    assert {"reward_accuracy", "mean_margin"} <= report.keys()
    samples = [json.loads(x) for x in (result.run_dir / EVAL_SAMPLES).read_text().splitlines()]
    s = samples[0]
    lp = s["logp"]
    assert s["margin"] == pytest.approx((lp["tuned_chosen"] - lp["base_chosen"])
                                        - (lp["tuned_rejected"] - lp["base_rejected"]), abs=1e-5)
    assert all(v < 0 for v in lp.values())  # log-probabilities of whole answers


def _error(capsys, *argv: str) -> tuple[int, str]:
    code = main(["eval", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_not_a_run_folder(tmp_path, capsys):
    code, err = _error(capsys, str(tmp_path))
    assert code == 2 and "not a run folder" in err and str(tmp_path) in err
    code, err = _error(capsys, str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


def test_no_adapter_yet(sft_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(sft_run / "preset.yaml", run / "preset.yaml")  # a run that has not saved its adapter
    code, err = _error(capsys, str(run))
    assert code == 2 and "no adapter yet" in err and "stop it" in err


def test_no_eval_split_needs_data(sft_run, tmp_path, capsys, demo):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    (run / "heldout.jsonl").unlink()
    code, err = _error(capsys, str(run))
    assert code == 2 and "no held-out rows" in err and "--data" in err
    # ... and with --data it scores those rows
    assert main(["eval", str(run), "--data", str(demo.data / "chart_sft.jsonl"), "--limit", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_unknown_metric_lists_the_valid_ones(sft_run, capsys):
    code, err = _error(capsys, str(sft_run), "--metric", "bleu")
    assert code == 2 and "'bleu'" in err
    assert all(m in err for m in ("exact_match", "relaxed_accuracy", "anls", "token_f1", "rouge_l"))


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_bad_limit(sft_run, capsys, limit):
    code, err = _error(capsys, str(sft_run), "--limit", limit)
    assert code == 2 and f"--limit {limit}" in err and "at least 1" in err
