"""data.sources: several datasets in one run, each read in its own format, mixed by weight (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer_core.config.presets import PresetError, load_preset
from trainer_core.data.prepare import prepare_dataset
from trainer_core.data.problems import DataError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def alpaca(path: Path, n: int) -> Path:
    return write_jsonl(path, [{"instruction": f"Add {i} and 1", "input": "", "output": str(i + 1)}
                              for i in range(n)])


def chats(path: Path, n: int) -> Path:
    return write_jsonl(path, [{"messages": [{"role": "user", "content": f"Double {i}"},
                                            {"role": "assistant", "content": str(2 * i)}]} for i in range(n)])


def preset_file(tmp_path: Path, data: str, model: str = "m", extra: str = "") -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(f"name: mix\ntask: sft\nmodel: {{name_or_path: {model}}}\n"
                    f"output_dir: {tmp_path / 'runs'}\n{extra}data:\n{data}", encoding="utf-8")
    return path


TWO_SOURCES = """\
  eval_fraction: 0.1
  sources:
    - path: alpaca.jsonl
      weight: 3
    - path: chat.jsonl
      format: messages
      weight: 1
"""


def prepare(tmp_path: Path, data: str, **kw):
    preset = load_preset(preset_file(tmp_path, data))
    return prepare_dataset(preset.data, "sft", conversational=True, is_vlm=False, **kw)


def test_each_source_is_read_in_its_format_and_reported(tmp_path):
    alpaca(tmp_path / "alpaca.jsonl", 30)
    chats(tmp_path / "chat.jsonl", 10)
    prepared = prepare(tmp_path, TWO_SOURCES)
    assert prepared.format == "mixed"
    a, c = prepared.sources
    assert (Path(a["path"]).name, a["format"], a["rows"], a["kept"], a["skipped"], a["weight"]) == \
        ("alpaca.jsonl", "alpaca", 30, 30, 0, 3.0)
    assert (Path(c["path"]).name, c["format"], c["rows"], c["kept"], c["skipped"]) == ("chat.jsonl", "messages", 10, 10, 0)
    # alpaca's prompt/completion rows are joined into conversations, so every row has one shape
    assert list(prepared.train.features) == ["messages"]
    assert a["in_train"] + c["in_train"] == len(prepared.train)
    # each source held out its own share before mixing: 3 of 30 and 1 of 10
    assert len(prepared.eval) == 4 and prepared.rows == len(prepared.train) + 4
    assert prepared.sample and prepared.stats().rows == prepared.rows


def test_weights_set_each_sources_share_of_the_mix(tmp_path):
    alpaca(tmp_path / "alpaca.jsonl", 300)
    chats(tmp_path / "chat.jsonl", 300)
    data = """\
  sources:
    - {path: alpaca.jsonl, weight: 1}
    - {path: chat.jsonl, weight: 3}
"""
    prepared = prepare(tmp_path, data, seed=7)
    # counted in the rows themselves, not only in the report
    firsts = [row["messages"][0]["content"] for row in prepared.train]
    n_alpaca, n_chat = sum(f.startswith("Add") for f in firsts), sum(f.startswith("Double") for f in firsts)
    assert [s["in_train"] for s in prepared.sources] == [n_alpaca, n_chat]
    # all_exhausted: the mix ends once the lighter source (300 rows at 1/4) has been used whole
    assert n_alpaca >= 300 and 2.6 < n_chat / n_alpaca < 3.4
    assert prepare(tmp_path, data, seed=7).sources == prepared.sources  # seeded: the same mix again


def test_without_weights_the_sources_follow_each_other(tmp_path):
    alpaca(tmp_path / "alpaca.jsonl", 5)
    chats(tmp_path / "chat.jsonl", 3)
    prepared = prepare(tmp_path, "  sources:\n    - path: alpaca.jsonl\n    - path: chat.jsonl\n")
    firsts = [row["messages"][0]["content"] for row in prepared.train]
    assert [f.split()[0] for f in firsts] == ["Add"] * 5 + ["Double"] * 3
    assert [s["in_train"] for s in prepared.sources] == [5, 3]


def test_text_only_rows_mix_with_image_rows_for_a_vlm(tmp_path, demo):
    chats(tmp_path / "chat.jsonl", 4)
    data = f"  sources:\n    - path: {demo.data / 'chart_sft.jsonl'}\n      max_samples: 6\n    - path: chat.jsonl\n"
    preset = load_preset(preset_file(tmp_path, data))
    prepared = prepare_dataset(preset.data, "sft", conversational=True, is_vlm=True)
    assert prepared.has_images and len(prepared.train) == 10
    # TRL's collator takes images: [] as a text-only row (and a batch of them as text-only)
    assert [len(r) for r in prepared.train.with_format("arrow")[:]["images"].to_pylist()] == [1] * 6 + [0] * 4


@pytest.mark.slow
def test_a_mixed_preset_trains_on_the_demo_text_model(tmp_path, demo):
    from trainer_core.plan.from_preset import plan_preset_report
    from trainer_core.run.engine import run_training

    alpaca(tmp_path / "alpaca.jsonl", 12)
    chats(tmp_path / "chat.jsonl", 12)
    path = preset_file(tmp_path, TWO_SOURCES, model=str(demo.text_model),
                       extra="training: {max_steps: 2, micro_batch_size: 2, gradient_accumulation_steps: 1}\n"
                             "samples: {every_steps: 0}\n")
    preset = load_preset(path)
    report = plan_preset_report(preset, gpu_mib=80_000)  # plans from the source with the longest rows
    assert report.stats is not None and report.stats.rows == 12
    result = run_training(preset)
    assert result.status == "completed", result.error
    assert result.steps == 2


@pytest.mark.slow
def test_a_vlm_trains_on_image_and_text_only_rows_in_one_batch(tmp_path, demo):
    from trainer_core.run.engine import run_training

    chats(tmp_path / "chat.jsonl", 8)
    data = (f"  sources:\n    - {{path: {demo.data / 'chart_sft.jsonl'}, max_samples: 8, weight: 1}}\n"
            "    - {path: chat.jsonl, weight: 1}\n")
    path = preset_file(tmp_path, data, model=str(demo.model),
                       extra="training: {max_steps: 2, micro_batch_size: 8, gradient_accumulation_steps: 1}\n"
                             "samples: {every_steps: 0}\n")
    result = run_training(load_preset(path))
    assert result.status == "completed", result.error


def problems_of(tmp_path: Path, data: str) -> str:
    with pytest.raises(PresetError) as err:
        load_preset(preset_file(tmp_path, data))
    return str(err.value)


def test_path_and_sources_together_are_refused(tmp_path):
    msg = problems_of(tmp_path, "  path: a.jsonl\n  sources:\n    - path: b.jsonl\n")
    assert "data.path: give data.path or data.sources, not both" in msg


def test_a_per_source_key_left_in_data_names_where_it_goes(tmp_path):
    msg = problems_of(tmp_path, "  format: alpaca\n  sources:\n    - path: b.jsonl\n")
    assert "data.format: with data.sources, set format on each source (e.g. data.sources[0].format)" in msg


def test_an_unknown_source_key_suggests_the_right_one(tmp_path):
    msg = problems_of(tmp_path, "  sources:\n    - path: a.jsonl\n    - {path: b.jsonl, wieght: 2}\n")
    assert "data.sources[1].wieght: unknown key; did you mean 'weight'?" in msg


@pytest.mark.parametrize("weight", [0, -1])
def test_a_weight_must_be_positive(tmp_path, weight):
    msg = problems_of(tmp_path, f"  sources:\n    - {{path: a.jsonl, weight: 1}}\n"
                                f"    - {{path: b.jsonl, weight: {weight}}}\n")
    assert "data.sources[1].weight: must be a positive number" in msg


def test_weights_are_given_to_every_source_or_none(tmp_path):
    msg = problems_of(tmp_path, "  sources:\n    - {path: a.jsonl, weight: 1}\n    - path: b.jsonl\n")
    assert "data.sources: give every source a weight (to mix them) or none" in msg
    assert "no weight: data.sources[1]" in msg


def test_an_empty_source_path_is_refused(tmp_path):
    msg = problems_of(tmp_path, "  sources:\n    - path: a.jsonl\n    - path: ''\n")
    assert "data.sources[1].path: must not be empty" in msg


def test_a_missing_file_names_its_source(tmp_path):
    alpaca(tmp_path / "alpaca.jsonl", 3)
    with pytest.raises(DataError) as err:
        prepare(tmp_path, "  sources:\n    - path: alpaca.jsonl\n    - path: missing.jsonl\n")
    assert str(err.value).startswith("dataset data.sources[1] (missing.jsonl)")


def test_sources_of_different_kinds_are_refused(tmp_path):
    write_jsonl(tmp_path / "plain.jsonl", [{"text": "Once upon a time"}] * 3)
    chats(tmp_path / "chat.jsonl", 3)
    with pytest.raises(DataError) as err:
        prepare(tmp_path, "  sources:\n    - path: plain.jsonl\n    - path: chat.jsonl\n")
    msg = str(err.value)
    assert "these sources cannot be mixed: data.sources[0] (text) gives text; data.sources[1] (messages) gives " \
           "messages" in msg and "train them in separate runs" in msg
