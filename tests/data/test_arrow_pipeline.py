"""The data pipeline in Arrow: rows read into memory-mapped datasets, converted and checked in batches, with
the same reports as before (JSON Lines line numbers, CSV text kept as text, one-object .json files)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer_core.config.presets import DataSection
from trainer_core.data.check import check_data
from trainer_core.data.prepare import prepare_dataset
from trainer_core.data.problems import DataError
from trainer_core.data.sources import read_rows
from trainer_core.data.stats import STATS_SAMPLE


def prepare(path, task="sft", vlm=False, conversational=False, **data):
    return prepare_dataset(DataSection(path=str(path), **data), task, conversational=conversational, is_vlm=vlm)


def vlmtune(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_jsonl_problems_keep_their_line_numbers(tmp_path):
    f = tmp_path / "d.jsonl"
    # Blank lines count as lines: the report names the line the user's editor shows.
    f.write_text('{"prompt": "q", "completion": "a"}\n\n{"prompt": "q", "completion": "b"}\n\n'
                 '{"prompt": "q", "completion": ""}\n')
    report = check_data(str(f), "sft")
    assert report.rows == 3 and report.valid_rows == 2
    [problem] = report.problems
    assert (problem.row, problem.line, problem.column) == (2, 5, "completion")
    with pytest.raises(DataError, match="line 5, column 'completion': is empty"):
        prepare(f)


def test_bad_json_lines_are_all_named(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "q", "completion": "a"}\n[1, 2]\n{"prompt": oops}\n')
    with pytest.raises(DataError) as info:
        read_rows(str(f))
    msg = str(info.value)
    assert "line 2 is not a JSON object" in msg and "line 3 is not valid JSON" in msg


def test_a_column_whose_type_differs_between_rows_is_read(tmp_path):
    # ChartQA-style labels: a list in one row, text in the next. A typed Arrow column could hold only one.
    f = tmp_path / "d.jsonl"
    f.write_text('{"query": "q1", "label": ["7"]}\n{"query": "q2", "label": "8"}\n')
    out = prepare(f)
    assert sorted(r["completion"] for r in out.train) == ["7", "8"]


def test_csv_columns_stay_text(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("question,answer\n0.50,00000\nNA,1.10\n")
    rows, _ = read_rows(str(f)).head(5)
    assert rows == [{"question": "0.50", "answer": "00000"}, {"question": "NA", "answer": "1.10"}]
    out = prepare(f)
    assert [r["completion"] for r in out.train] == ["00000", "1.10"]


def test_one_conversation_object_is_one_row(tmp_path):
    f = tmp_path / "one.json"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"}]}))
    report = check_data(str(f), "sft")
    assert report.ok and report.rows == 1 and report.format == "messages"
    assert report.previews == ["user: hi\nassistant: hello"]


def test_data_wrapper_is_still_unwrapped(tmp_path):
    f = tmp_path / "wrapped.json"
    f.write_text(json.dumps({"version": 2, "data": [{"prompt": "q", "completion": "a"},
                                                    {"prompt": "r", "completion": "b"}]}))
    report = check_data(str(f), "sft")
    assert report.ok and report.rows == 2


def test_llamafactory_folder_is_not_a_save_to_disk_folder(tmp_path):
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "qa.json"}}))
    (folder / "qa.json").write_text(json.dumps([{"instruction": "say hi", "input": "", "output": "hi"}]))
    result = vlmtune("data", "check", str(folder), "--task", "sft", "--json")
    assert result.returncode != 2, result.stderr
    report = json.loads(result.stdout)  # a report, not a traceback
    messages = " ".join(p["message"] for p in report["problems"])
    # Read through trainer_core.data.llamafactory where it exists; otherwise told what to set.
    assert (report["ok"] and report["rows"] == 1) or ("LLaMA-Factory" in messages and "data.path" in messages)

    (folder / "dataset_info.json").write_text(json.dumps({"qa": {"file_name": "missing.json"}}))
    result = vlmtune("data", "check", str(folder), "--task", "sft", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and not report["ok"]
    assert "Traceback" not in result.stderr and report["problems"]


def _big(tmp_path, n=3000, bad_line=None):
    f = tmp_path / "big.jsonl"
    with f.open("w") as out:
        for i in range(1, n + 1):
            answer = "" if i == bad_line else str(i % 10)
            out.write(json.dumps({"prompt": f"What is {i} mod 10?", "completion": answer}) + "\n")
    return f


def test_a_larger_set_is_prepared_into_memory_mapped_arrow(tmp_path):
    out = prepare(_big(tmp_path), eval_fraction=0.1)
    assert out.rows == 3000 and len(out.train) == 2700 and len(out.eval) == 300
    # Rows live in Arrow files on disk (memory-mapped), not in a Python list or an in-memory table.
    assert out.train.cache_files and out.eval.cache_files
    assert len(out.sample) == STATS_SAMPLE and out.sample[0] == {"prompt": "What is 1 mod 10?", "completion": "1"}
    assert out.stats().rows == 3000


def test_skip_invalid_in_a_larger_set_names_the_line(tmp_path):
    out = prepare(_big(tmp_path, bad_line=2500), skip_invalid=True)
    assert out.rows == 2999 and len(out.train) == 2999
    [problem] = out.skipped
    assert (problem.row, problem.line, problem.column) == (2499, 2500, "completion")
    assert "What is 2500 mod 10?" not in {r["prompt"] for r in out.train.select(range(2495, 2500))}


def test_check_validates_every_row_in_batches_with_progress(tmp_path):
    seen = []
    report = check_data(str(_big(tmp_path, bad_line=2999)), "sft", progress=lambda done, total: seen.append(
        (done, total)))
    assert report.rows == 3000 and report.valid_rows == 2999
    assert [(p.line, p.column) for p in report.problems] == [(2999, "completion")]
    assert len(seen) > 1 and seen[-1] == (3000, 3000)
    assert STATS_SAMPLE - 1 <= report.stats.sampled <= STATS_SAMPLE  # spread over the set (one bad row)


def test_limit_previews_the_first_rows(tmp_path):
    report = check_data(str(_big(tmp_path)), "sft", limit=10, preview=1)
    assert report.rows == 10 and report.ok and report.previews == ["user: What is 1 mod 10?\nassistant: 1"]


def test_a_late_row_with_a_new_structure_keeps_it(tmp_path):
    # The types come from the first rows; a tool call 600 rows in still has to reach the trainer whole.
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    tool = {"messages": [{"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]}
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(plain) + "\n" for _ in range(600)) + json.dumps(tool) + "\n")
    out = prepare(f, conversational=True)
    assert len(out.train) == 601
    assert out.train[600]["messages"][1]["tool_calls"] == [call]
    assert out.train[0]["messages"][1]["content"] == "hello"


def test_data_check_lists_the_columns_no_role_uses(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a", "id": i, "source": "web"}) + "\n"
                         for i in range(3)))
    result = vlmtune("data", "check", str(f), "--task", "sft", "--json")
    report = json.loads(result.stdout)
    assert report["ignored"] == ["id", "source"] and report["ok"]
    human = vlmtune("data", "check", str(f), "--task", "sft")
    assert "ignored    id, source" in human.stdout


def test_tool_calls_are_refused_where_the_template_cannot_render_them(tmp_path):
    """Training data with tool calls never loses them silently: a template without tools refuses the rows."""
    f = tmp_path / "tools.jsonl"
    call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                                  "arguments": {"city": "Paris"}}}]}
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "Weather in Paris?"}, call,
                                          {"role": "tool", "content": "22C"},
                                          {"role": "assistant", "content": "It is 22C."}]}) + "\n")
    with pytest.raises(DataError) as err:
        prepare_dataset(DataSection(path=str(f), eval_fraction=0.0), "sft", conversational=True, is_vlm=False,
                        tools_supported=False)
    assert "tool" in str(err.value) and "template" in str(err.value)
    ok = prepare_dataset(DataSection(path=str(f), eval_fraction=0.0), "sft", conversational=True, is_vlm=False,
                         tools_supported=True)
    assert ok.rows == 1 and ok.sample[0]["messages"][1]["tool_calls"]
