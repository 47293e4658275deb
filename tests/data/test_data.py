"""Data loading, format detection and conversion to TRL's format, with every user error's message."""

from __future__ import annotations

import json

import pytest

from trainer_core.config.presets import DataSection
from trainer_core.data.formats import detect_format
from trainer_core.data.prepare import prepare_dataset
from trainer_core.data.problems import DataError
from trainer_core.data.sources import read_rows


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def prepare(path, task="sft", vlm=True, conversational=True, **data):
    return prepare_dataset(DataSection(path=str(path), **data), task, conversational=conversational, is_vlm=vlm)


def test_demo_sft_is_trl_conversational_with_decoded_images(demo):
    out = prepare(demo.data / "chart_sft.jsonl")
    assert out.format == "messages" and out.has_images and out.rows == 96
    row = out.train[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["images"][0].size == (64, 64)  # decoded lazily by datasets.Image


def test_demo_dpo_maps_to_conversational_preference(demo):
    out = prepare(demo.data / "chart_dpo.jsonl", task="dpo", eval_fraction=0.25)
    assert out.format == "preference"
    assert len(out.train) == 72 and len(out.eval) == 24
    row = out.train[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"] != row["rejected"]


def test_text_without_chat_template_stays_plain(demo):
    out = prepare(demo.data / "text_sft.jsonl", vlm=False, conversational=False)
    assert out.format == "prompt_completion" and isinstance(out.train[0]["prompt"], str)


@pytest.mark.parametrize(
    ("columns", "task", "expected"),
    [
        (["messages", "images"], "sft", "messages"),
        (["conversations", "image"], "sft", "messages"),
        (["instruction", "input", "output"], "sft", "alpaca"),
        (["image", "query", "label"], "sft", "question_answer"),
        (["text"], "sft", "text"),
        (["image", "question", "chosen", "rejected", "ds_name"], "dpo", "preference"),
        (["chosen", "rejected"], "dpo", "implicit_preference"),
    ],
)
def test_format_detection(columns, task, expected):
    assert detect_format(columns, task).format.name == expected


def test_column_mapping_overrides_detection():
    det = detect_format(["q", "a", "pic"], "sft", overrides={"prompt": "q", "completion": "a", "images": "pic"})
    assert det.format.name == "prompt_completion" and det.mapping == {"prompt": "q", "completion": "a", "images": "pic"}


def test_no_fitting_columns_names_found_and_expected():
    with pytest.raises(DataError) as info:
        detect_format(["foo", "bar"], "dpo")
    msg = str(info.value)
    assert "found foo, bar" in msg and "prompt/question/query/instruction + chosen + rejected" in msg


def test_mapping_to_missing_column():
    with pytest.raises(DataError, match="data.columns maps 'prompt' to 'q', which is not a column"):
        detect_format(["x"], "sft", overrides={"prompt": "q"})


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_rows(str(tmp_path / "nope.jsonl"))


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_rows(str(tmp_path / "e.jsonl"))


def test_bad_jsonl_line_is_named(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", oops}\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_rows(str(f))


def test_unsupported_extension(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match="unsupported file kind '.txt'"):
        read_rows(str(tmp_path / "d.txt"))


def test_row_problems_name_line_and_column(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [
        {"images": ["missing.png"], "prompt": "q", "completion": "a"},
        {"prompt": "q", "completion": ""},
        {"prompt": "q", "completion": "ok"},
    ])
    with pytest.raises(DataError) as info:
        prepare(f)
    msg = str(info.value)
    assert "line 1, column 'images': image not found" in msg
    assert "line 2, column 'completion': is empty" in msg
    assert "data.skip_invalid" in msg


def test_skip_invalid_drops_bad_rows(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": ""}, {"prompt": "q", "completion": "a"}])
    out = prepare(f, vlm=False, skip_invalid=True)
    assert out.rows == 1 and len(out.skipped) == 1


def test_chosen_equal_rejected(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(DataError, match="column 'rejected': chosen and rejected are identical"):
        prepare(f, task="dpo", vlm=False)


def test_last_turn_not_assistant(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="the last turn is not the assistant's"):
        prepare(f, vlm=False)


def test_sharegpt_roles_and_image_placeholders(tmp_path, demo):
    img = demo.data / "images" / "chart_000.png"
    f = jsonl(tmp_path / "d.jsonl", [{"image": str(img), "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A chart."}]}])
    out = prepare(f)
    assert out.train[0]["messages"] == [{"role": "user", "content": "What is shown?"},
                                        {"role": "assistant", "content": "A chart."}]


def test_images_for_a_text_model_are_refused(demo):
    with pytest.raises(DataError, match="the data has images but the model is text-only"):
        prepare(demo.data / "chart_sft.jsonl", vlm=False)


def test_hub_dataset_unreachable_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from trainer_core.model.hub import hub_reachable

    hub_reachable.cache_clear()
    with pytest.raises(DataError, match="could not reach the hub dataset 'org/some-set'.*set data.path to the local"):
        read_rows("org/some-set")
    hub_reachable.cache_clear()


def test_csv_and_parquet(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"instruction": ["say hi"], "input": [""], "output": ["hi"]})
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        out = prepare(tmp_path / name, vlm=False, conversational=False)
        assert out.format == "alpaca" and out.train[0]["completion"] == "hi"
