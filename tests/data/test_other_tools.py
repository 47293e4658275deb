"""Other tools' dataset shapes, written as their docs define them, through detection and conversion.

TRL (conversational prompt/completion, implicit prompts, tool calling), LLaMA-Factory (dataset_info.json,
alpaca with system/history, sharegpt with its tags, ranking), ms-swift (messages, query/response/system/
history, rejected_response, label), axolotl chat_template datasets and LLaVA. Every column that carries
meaning is handled or refused with the reason; image URLs come from a real local HTTP server.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from data_fixtures import FORMATS as FIXTURE_FORMATS
from data_fixtures import build

from trainer_core.data.formats import detect_format
from trainer_core.data.llamafactory import resolve_entry
from trainer_core.data.problems import DataError
from trainer_core.data.to_trl import convert_rows, template_supports_tools


def png(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        return pd.read_csv(path).to_dict("records")
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()  # lists stay lists (pandas would give numpy arrays)


def columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def convert(rows, task="sft", *, columns=None, fmt="auto", tags=None, conversational=True, base_dir=None, **kw):
    det = detect_format(columns_of(rows), task, fmt, columns, source="test", tags=tags)
    return det, convert_rows(rows, det, conversational=conversational, base_dir=base_dir, **kw)


def only_problem(out) -> str:
    assert len(out.problems) == 1, out.problems
    return str(out.problems[0])


# --- system prompts and history (LLaMA-Factory alpaca, ms-swift query/response) -------------------------

ALPACA_SYS_HISTORY = {
    "instruction": "And in Paris?", "input": "Answer in one word.", "output": "Rainy",
    "system": "You are a weather bot.",
    "history": [["Weather in Rome?", "Sunny"], ["And in Oslo?", "Snowy"]],
}


def test_alpaca_system_and_history_become_turns_before_the_prompt():
    det, out = convert([ALPACA_SYS_HISTORY])
    assert det.format.name == "alpaca" and det.ignored == []
    assert det.mapping == {"prompt": "instruction", "completion": "output", "input": "input", "system": "system",
                           "history": "history"}
    row = out.rows[0]
    assert row["prompt"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Rome?"}, {"role": "assistant", "content": "Sunny"},
        {"role": "user", "content": "And in Oslo?"}, {"role": "assistant", "content": "Snowy"},
        {"role": "user", "content": "And in Paris?\nAnswer in one word."},  # LLaMA-Factory: instruction\ninput
    ]
    assert row["completion"] == [{"role": "assistant", "content": "Rainy"}]


def test_system_and_history_reach_a_model_without_chat_template_as_text():
    _, out = convert([ALPACA_SYS_HISTORY], conversational=False)
    prompt = out.rows[0]["prompt"]
    assert prompt.startswith("You are a weather bot.") and "Weather in Rome?" in prompt and "Snowy" in prompt
    assert out.rows[0]["completion"] == "Rainy"


def test_swift_query_response_with_system_and_history():
    rows = [{"system": "Be terse.", "query": "What is 2+2?", "response": "4", "history": [["Hi", "Hello"]]}]
    det, out = convert(rows)
    assert det.format.name == "question_answer" and {"system", "history"} <= det.mapping.keys()
    assert [t["role"] for t in out.rows[0]["prompt"]] == ["system", "user", "assistant", "user"]


def test_bad_history_names_the_item_and_the_shape():
    _, out = convert([{**ALPACA_SYS_HISTORY, "history": [["only the question"]]}])
    assert "column 'history': history item 0 is not an [instruction, response] pair" in only_problem(out)


def test_messages_with_a_system_column_put_it_first_once():
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    _, out = convert([{"conversations": turns, "system": "Be kind."},
                      {"conversations": [{"from": "system", "value": "Own system."}, *turns], "system": "Be kind."}])
    assert out.rows[0]["messages"][0] == {"role": "system", "content": "Be kind."}
    # LLaMA-Factory: a system turn in the conversation overrides the column; never two system turns
    assert [t["content"] for t in out.rows[1]["messages"] if t["role"] == "system"] == ["Own system."]


# --- roles and columns: nothing ignored silently -------------------------------------------------------

def test_a_role_the_format_has_no_slot_for_is_an_error_listing_the_roles():
    with pytest.raises(DataError) as info:
        detect_format(["prompt", "completion", "sys"], "sft", overrides={"sytem": "sys"})
    msg = str(info.value)
    assert "column 'sys': data.columns (--columns) gives role 'sytem', which no sft format has" in msg
    assert "prompt_completion: prompt, completion, images, system, history, tools" in msg


def test_a_role_the_named_format_lacks_lists_that_formats_roles():
    with pytest.raises(DataError) as info:
        detect_format(["text", "sys"], "sft", "text", overrides={"system": "sys"})
    assert ("column 'sys': data.columns (--columns) gives role 'system', which format text has no place "
            "for; the roles it can use are: text: text, images, videos, audios") in str(info.value)


def test_a_role_the_detected_format_lacks_is_named_not_a_vague_no_fit():
    with pytest.raises(DataError) as info:
        detect_format(["text", "notes"], "sft", overrides={"history": "notes"})
    msg = str(info.value)
    assert "gives role 'history', which format text has no place for" in msg
    assert "no columns fit" not in msg


def test_ignored_columns_are_listed():
    det = detect_format(["id", "prompt", "completion", "source"], "sft")
    assert det.ignored == ["id", "source"]


def test_a_meaningful_column_the_format_cannot_place_is_refused():
    with pytest.raises(DataError) as info:
        detect_format(["text", "system"], "sft")
    msg = str(info.value)
    assert "column 'system': this looks like a system column, but format text has no place" in msg
    assert "this format's roles are: text, images, videos, audios" in msg


# --- TRL's dataset types ---------------------------------------------------------------------------------

def test_trl_conversational_prompt_completion():
    rows = [{"prompt": [{"role": "user", "content": "What color is the sky?"}],
             "completion": [{"role": "assistant", "content": "It is blue."}]}]
    det, out = convert(rows)
    assert det.format.name == "prompt_completion" and out.problems == []
    assert out.rows[0] == rows[0]


def test_conversational_prompt_completion_without_chat_template_says_why():
    rows = [{"prompt": [{"role": "user", "content": "Sky?"}], "completion": [{"role": "assistant", "content": "Blue"}]}]
    _, out = convert(rows, conversational=False)
    assert "column 'prompt': turns need a chat template, and this tokenizer has none" in only_problem(out)


def test_trl_implicit_prompt_with_plain_text():
    rows = [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    det, out = convert(rows, "dpo")
    assert det.format.name == "implicit_preference"
    assert out.rows[0] == {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}


def test_implicit_plain_text_without_shared_start_is_refused():
    _, out = convert([{"chosen": "Blue.", "rejected": "Green."}], "dpo")
    assert "chosen and rejected share no opening text, so there is no prompt; give a prompt column" in only_problem(out)


# --- tool calling -----------------------------------------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_ROW = {"messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "content": "Sunny, 24C"},
    {"role": "assistant", "content": "It is sunny and 24C in Paris."}],
    "tools": json.dumps([WEATHER_TOOL])}


def test_tool_calling_conversation_is_kept_with_calls_and_tools():
    det, out = convert([TOOL_ROW], tools_supported=True)
    assert det.mapping == {"messages": "messages", "tools": "tools"} and out.problems == []
    msgs = out.rows[0]["messages"]
    assert msgs[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert msgs[2] == {"role": "tool", "content": "Sunny, 24C"}
    assert json.loads(out.rows[0]["tools"]) == [WEATHER_TOOL]


def test_tool_calls_with_a_template_that_cannot_render_them_are_refused():
    _, out = convert([TOOL_ROW], tools_supported=False)
    assert "the row calls tools, and this model's chat template does not render tools" in only_problem(out)
    plain = {"prompt": "Weather in Paris?", "completion": "Sunny.", "tools": [WEATHER_TOOL]}
    _, out = convert([plain], conversational=False)
    assert ("column 'tools': the row calls tools, which only a chat template can render, and this tokenizer has "
            "none") in only_problem(out)


def test_tool_call_without_a_name_is_reported():
    bad = json.loads(json.dumps(TOOL_ROW))
    bad["messages"][1]["tool_calls"] = [{"type": "function", "function": {"arguments": "{}"}}]
    _, out = convert([bad])
    assert "turn 1 has a tool call without a function name" in only_problem(out)


def test_tool_turns_are_not_flattened_away_without_a_chat_template():
    rows = [{"messages": [{"role": "user", "content": "Weather in Rome?"},
                          {"role": "tool_call", "content": "{\"name\": \"get_weather\", \"arguments\": {}}"},
                          {"role": "tool_response", "content": "Sunny"},
                          {"role": "assistant", "content": "Sunny."}], "rejected_response": "No idea."}]
    _, out = convert(rows, "dpo", conversational=False)
    assert "column 'messages': the row calls tools, which only a chat template can render" in only_problem(out)


def test_history_goes_after_a_system_turn_of_conversational_prompts():
    rows = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}],
             "completion": [{"role": "assistant", "content": "A2"}], "history": [["Q1", "A1"]]}]
    _, out = convert(rows)
    assert [t["content"] for t in out.rows[0]["prompt"]] == ["S", "Q1", "A1", "Q2"]


def tokenizer_with(template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hi": 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = template
    return fast


TOOL_TEMPLATE = (
    "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function.name }} {{ c.function.arguments | tojson }}"
    "</call>{% endfor %}{% endif %}\n{% endfor %}")
PLAIN_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def test_template_supports_tools_renders_a_probe_through_the_real_template():
    assert template_supports_tools(tokenizer_with(TOOL_TEMPLATE)) is True
    assert template_supports_tools(tokenizer_with(PLAIN_TEMPLATE)) is False
    assert template_supports_tools(tokenizer_with(None)) is False
    # and what we keep renders: the call and the tool schema reach the training text
    _, out = convert([TOOL_ROW], tools_supported=True)
    row = out.rows[0]
    text = tokenizer_with(TOOL_TEMPLATE).apply_chat_template(row["messages"], tools=json.loads(row["tools"]),
                                                             tokenize=False)
    assert '<call>get_weather {"city": "Paris"}</call>' in text and "Weather of a city" in text


def test_swift_tool_call_and_tool_response_roles_merge_parallel_calls():
    rows = [{"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in Rome and Oslo?"},
        {"role": "tool_call", "content": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}"},
        {"role": "tool_call", "content": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"},
        {"role": "tool_response", "content": "Sunny"}, {"role": "tool_response", "content": "Snowy"},
        {"role": "assistant", "content": "Rome is sunny, Oslo snowy."}]}]
    _, out = convert(rows)
    msgs = out.rows[0]["messages"]
    assert [t["role"] for t in msgs] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["function"]["arguments"]["city"] for c in msgs[1]["tool_calls"]] == ["Rome", "Oslo"]


# --- videos, audio and KTO labels: refused with the reason ----------------------------------------------

def test_videos_are_refused_with_the_reason():
    turns = [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "A cat jumps."}]
    _, out = convert([{"messages": turns, "videos": ["clip.mp4"]}])
    assert "column 'videos': the row has videos; vlmtune trains on images and text, not video" in only_problem(out)
    parts = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
             {"role": "assistant", "content": "A cat jumps."}]
    _, out = convert([{"messages": parts}])
    assert "column 'messages': a turn holds a video part; vlmtune trains on images and text" in only_problem(out)


@pytest.mark.parametrize(("part", "message"), [
    ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
     "a turn holds an OpenAI image_url part, which is not read: put the image's path or URL in an images column"),
    ({"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
     "a turn holds an Anthropic tool_use block, which is not read: write tool calls as the assistant's tool_calls"),
])
def test_content_blocks_from_other_apis_are_refused_with_the_way_to_write_them(part, message):
    rows = [{"messages": [{"role": "user", "content": [part, {"type": "text", "text": "Hi"}]},
                          {"role": "assistant", "content": "Hello"}]}]
    _, out = convert(rows)
    assert message in only_problem(out)


def test_kto_label_is_refused_not_trained_as_sft():
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away"}],
             "label": False}]
    det, out = convert(rows)
    assert det.mapping["label"] == "label"
    assert "column 'label': the row has a label (False): KTO-style good/bad feedback" in only_problem(out)


# --- image URLs: downloaded once into the cache -----------------------------------------------------------

@pytest.fixture
def image_server(tmp_path):
    served = tmp_path / "www"
    png(served / "red.png")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet test output
            pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_image_urls_download_once_into_the_cache_and_failures_name_their_row(image_server, tmp_path, monkeypatch):
    base, hits = image_server
    cache = tmp_path / "cache"
    monkeypatch.setenv("VLMTUNE_CACHE", str(cache))
    rows = [{"images": [f"{base}/red.png"], "messages": [
                {"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "Red"}]},
            {"images": [f"{base}/red.png"], "messages": [
                {"role": "user", "content": "<image>Again?"}, {"role": "assistant", "content": "Red"}]},
            {"images": [f"{base}/missing.png"], "messages": [
                {"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "?"}]}]
    _, out = convert(rows, line_numbers=[1, 2, 3])
    assert out.kept == [0, 1] and out.has_images
    local = Path(out.rows[0]["images"][0]["path"])
    assert local.parent == cache / "images" and local.read_bytes() == (tmp_path / "www" / "red.png").read_bytes()
    problem = only_problem(out)
    assert problem.startswith("line 3, column 'images': image URL could not be downloaded: ")
    assert "missing.png answered HTTP 404" in problem and "put their local paths in the column" in problem
    assert hits.count("/red.png") == 1
    convert(rows[:1])  # a second pass reads the cache
    assert hits.count("/red.png") == 1


def test_many_downloads_report_progress_and_each_failure(image_server, tmp_path, monkeypatch):
    from trainer_core.data.remote_images import fetch_all

    base, hits = image_server
    monkeypatch.setenv("VLMTUNE_CACHE", str(tmp_path / "cache"))
    seen: list[tuple[int, int]] = []
    urls = [f"{base}/red.png", f"{base}/red.png?copy=2", f"{base}/nope.png", f"{base}/red.png"]
    paths, failures = fetch_all(urls, progress=lambda done, total: seen.append((done, total)))
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]  # three distinct URLs, each fetched once
    assert set(paths) == {f"{base}/red.png", f"{base}/red.png?copy=2"}
    assert failures == {f"{base}/nope.png": f"{base}/nope.png answered HTTP 404 File not found"}
    assert not list((tmp_path / "cache" / "images").glob("*.part"))  # no half files left behind


# --- LLaMA-Factory data folders ----------------------------------------------------------------------------

def lf_folder(root: Path, entries: dict, files: dict[str, list[dict]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_info.json").write_text(json.dumps(entries))
    for name, rows in files.items():
        (root / name).write_text(json.dumps(rows))
    return root


def lf_convert(folder: Path, name: str | None, task: str = "sft", **kw):
    path, fmt, mapping, tags = resolve_entry(folder, name)
    rows = read(path)
    det = detect_format(columns_of(rows), task, fmt, mapping, source=str(path), tags=tags)
    return det, convert_rows(rows, det, conversational=True, base_dir=path.parent, **kw)


def test_llamafactory_alpaca_with_system_and_history(tmp_path):
    folder = lf_folder(tmp_path / "data", {"weather": {"file_name": "w.json", "columns": {
        "prompt": "instruction", "query": "input", "response": "output", "system": "system",
        "history": "history"}}}, {"w.json": [ALPACA_SYS_HISTORY]})
    det, out = lf_convert(folder, "weather")
    assert det.format.name == "alpaca" and out.problems == []
    assert [t["role"] for t in out.rows[0]["prompt"]] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_llamafactory_sharegpt_defaults_with_system_tools_and_function_calls(tmp_path):
    """glaive_toolcall_en_demo's shape: from/value, function_call and observation turns, tools as a string."""
    conv = [{"from": "human", "value": "Find a recipe with rice."},
            {"from": "function_call", "value": "{\"name\": \"search_recipes\", \"arguments\": {\"q\": \"rice\"}}"},
            {"from": "observation", "value": "{\"recipes\": [\"Fried rice\"]}"},
            {"from": "gpt", "value": "Try fried rice."}]
    tools = json.dumps([{"name": "search_recipes", "description": "Search recipes",
                         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}])
    folder = lf_folder(tmp_path / "data", {"glaive": {"file_name": "g.json", "formatting": "sharegpt",
                                                      "columns": {"messages": "conversations", "system": "system",
                                                                  "tools": "tools"}}},
                       {"g.json": [{"conversations": conv, "system": "You cook.", "tools": tools}]})
    det, out = lf_convert(folder, None)  # the only entry
    assert det.format.name == "messages" and det.tags["role_tag"] == "from" and out.problems == []
    msgs = out.rows[0]["messages"]
    assert [t["role"] for t in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[2]["tool_calls"][0]["function"] == {"name": "search_recipes", "arguments": {"q": "rice"}}
    assert json.loads(out.rows[0]["tools"])[0]["name"] == "search_recipes"


def test_llamafactory_sharegpt_custom_tags_and_images(tmp_path):
    """mllm_demo's shape: role/content tags, an images list, <image> in the text."""
    png(tmp_path / "data" / "mllm_demo_data" / "1.png")
    rows = [{"messages": [{"role": "user", "content": "<image>Who are they?"},
                          {"role": "assistant", "content": "Players."}],
             "images": ["mllm_demo_data/1.png"]}]
    folder = lf_folder(tmp_path / "data", {"mllm_demo": {
        "file_name": "mllm_demo.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}},
        {"mllm_demo.json": rows})
    det, out = lf_convert(folder, "mllm_demo")
    assert out.problems == [] and out.has_images
    assert out.rows[0]["messages"][0] == {"role": "user", "content": "Who are they?"}
    assert out.rows[0]["images"][0]["path"].endswith("mllm_demo_data/1.png")


def test_llamafactory_custom_tags_are_the_ones_read(tmp_path):
    rows = [{"dialog": [{"speaker": "customer", "text": "Hi"}, {"speaker": "agent", "text": "Hello!"}]}]
    folder = lf_folder(tmp_path / "data", {"support": {
        "file_name": "s.json", "formatting": "sharegpt", "columns": {"messages": "dialog"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}}},
        {"s.json": rows})
    _, out = lf_convert(folder, "support")
    assert out.rows[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_llamafactory_sharegpt_ranking(tmp_path):
    """dpo_en_demo's shape: the conversation, then one chosen and one rejected message."""
    rows = [{"conversations": [{"from": "human", "value": "2+2?"}],
             "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}}]
    folder = lf_folder(tmp_path / "data", {"dpo": {"file_name": "d.json", "ranking": True, "formatting": "sharegpt",
                                                   "columns": {"messages": "conversations", "chosen": "chosen",
                                                               "rejected": "rejected"}}}, {"d.json": rows})
    det, out = lf_convert(folder, "dpo", "dpo")
    assert det.format.name == "conversation_preference" and out.problems == []
    assert out.rows[0] == {"prompt": [{"role": "user", "content": "2+2?"}],
                           "chosen": [{"role": "assistant", "content": "4"}],
                           "rejected": [{"role": "assistant", "content": "5"}]}


def test_llamafactory_alpaca_ranking(tmp_path):
    rows = [{"instruction": "2+2?", "input": "Digits only.", "chosen": "4", "rejected": "four"}]
    folder = lf_folder(tmp_path / "data", {"pairs": {"file_name": "p.json", "ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}}}, {"p.json": rows})
    det, out = lf_convert(folder, "pairs", "dpo")
    assert det.format.name == "preference"
    assert out.rows[0]["prompt"] == [{"role": "user", "content": "2+2?\nDigits only."}]


def test_llamafactory_pretraining_entry_is_text(tmp_path):
    folder = tmp_path / "data"
    jsonl(folder / "c4_demo.jsonl", [{"text": "A document."}])
    (folder / "dataset_info.json").write_text(json.dumps({"c4_demo": {"file_name": "c4_demo.jsonl",
                                                                      "columns": {"prompt": "text"}}}))
    det, out = lf_convert(folder, "c4_demo")
    assert det.format.name == "text" and out.rows == [{"text": "A document."}]


def test_llamafactory_video_and_kto_entries_are_refused_by_row(tmp_path):
    turns = [{"role": "user", "content": "<video>What?"}, {"role": "assistant", "content": "A cat."}]
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    folder = lf_folder(tmp_path / "data", {
        "video": {"file_name": "v.json", "formatting": "sharegpt", "columns": {"messages": "messages",
                                                                              "videos": "videos"}, "tags": tags},
        "kto": {"file_name": "k.json", "formatting": "sharegpt", "columns": {"messages": "messages",
                                                                            "kto_tag": "label"}, "tags": tags}},
        {"v.json": [{"messages": turns, "videos": ["a.mp4"]}], "k.json": [{"messages": turns, "label": True}]})
    _, out = lf_convert(folder, "video")
    assert "the row has videos" in only_problem(out)
    _, out = lf_convert(folder, "kto")
    assert "KTO-style good/bad feedback" in only_problem(out)


@pytest.mark.parametrize(("entries", "name", "message"), [
    ({"a": {"file_name": "x.json"}, "b": {"file_name": "x.json"}}, None,
     "dataset_info.json lists 2 datasets (a, b); name the one to train on with data.subset (--subset)"),
    ({"a": {"file_name": "x.json"}, "b": {"file_name": "x.json"}}, "c", "no dataset 'c' in dataset_info.json; it lists: a, b"),
    ({"ultrachat": {"hf_hub_url": "HuggingFaceH4/ultrachat_200k"}}, None,
     "is not a local file (hf_hub_url: 'HuggingFaceH4/ultrachat_200k'); set data.path to the hub id"),
    ({"ms": {"ms_hub_url": "AI-ModelScope/x"}}, None, "(ms_hub_url: 'AI-ModelScope/x'); set data.path to the hub id"),
    ({"a": {"file_name": "gone.json"}}, None, "names file_name 'gone.json', which is not in"),
    ({"a": {"file_name": "x.json", "colums": {}}}, None, "has key 'colums', which LLaMA-Factory does not define"),
    ({"a": {"file_name": "x.json", "columns": {"respones": "out"}}}, None,
     "has 'respones', which LLaMA-Factory does not define; columns can be: prompt, query, response"),
    ({"a": {"file_name": "x.json", "num_samples": 100}}, None,
     "sets num_samples (100), which vlmtune does not apply; remove it from the entry, and use data.max_samples"),
    ({"a": {"file_name": "x.json", "formatting": "chatml"}}, None,
     "has formatting 'chatml'; LLaMA-Factory's formats are alpaca and sharegpt"),
])
def test_llamafactory_entry_errors(tmp_path, entries, name, message):
    folder = lf_folder(tmp_path / "data", entries, {"x.json": [{"instruction": "a", "output": "b"}]})
    with pytest.raises(DataError) as info:
        resolve_entry(folder, name)
    assert message in str(info.value)


def test_llamafactory_folder_without_info_file(tmp_path):
    with pytest.raises(DataError, match="no dataset_info.json in .*: a LLaMA-Factory data folder lists"):
        resolve_entry(tmp_path, None)


# --- ms-swift -------------------------------------------------------------------------------------------------

def test_swift_messages_with_rejected_response_for_dpo(tmp_path):
    png(tmp_path / "kitten.png")
    rows = [{"messages": [{"role": "system", "content": "Be precise."},
                          {"role": "user", "content": "<image>What is this?"},
                          {"role": "assistant", "content": "This is a kitten."}],
             "images": ["kitten.png"], "rejected_response": "This is a puppy."}]
    det, out = convert(rows, "dpo", base_dir=tmp_path)
    assert det.format.name == "messages_rejected" and out.problems == []
    row = out.rows[0]
    assert row["prompt"] == [{"role": "system", "content": "Be precise."}, {"role": "user", "content": "What is this?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "This is a kitten."}]
    assert row["rejected"] == [{"role": "assistant", "content": "This is a puppy."}] and len(row["images"]) == 1


def test_swift_sharegpt_exchanges():
    rows = [{"system": "Be brief.", "conversation": [{"human": "Hi", "assistant": "Hello"},
                                                    {"human": "2+2?", "assistant": "4"}]}]
    _, out = convert(rows)
    assert [t["role"] for t in out.rows[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


# --- axolotl chat_template datasets and LLaVA ----------------------------------------------------------------

def test_axolotl_chat_template_field_names():
    rows = [{"chat": [{"speaker": "human", "text": "Hi"}, {"speaker": "gpt", "text": "Hello"}]}]
    det, out = convert(rows, columns={"messages": "chat"}, tags={"role_tag": "speaker", "content_tag": "text"})
    assert det.format.name == "messages"
    assert out.rows[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_llava_conversations_still_convert(tmp_path):
    png(tmp_path / "coco" / "1.jpg")
    rows = [{"id": "1", "image": "coco/1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A red square."}]}]
    det, out = convert(rows, base_dir=tmp_path)
    assert det.ignored == ["id"] and out.problems == [] and out.rows[0]["messages"][0]["content"] == "Describe."


# --- every existing family still converts ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    charts = tmp_path_factory.mktemp("charts")
    for i in range(4):
        png(charts / f"chart_{i:03d}.png", (64, 64))
    return build(tmp_path_factory.mktemp("formats"), charts)


@pytest.mark.parametrize("case", [c for c in FIXTURE_FORMATS if c.name not in ("imagefolder", "save_to_disk")],
                         ids=lambda c: c.name)
def test_existing_families_still_convert(fixtures, case):
    path = fixtures / case.path
    rows = read(path)
    base = fixtures / case.options["image_dir"] if "image_dir" in case.options else path.parent
    det, out = convert(rows, case.task, base_dir=base)
    assert det.format.name == case.format and det.mapping == case.mapping
    assert out.problems == [] and len(out.rows) == case.rows


# --- TRL trains on what the new shapes become ------------------------------------------------------------------

NEW_SHAPES = {
    # LLaMA-Factory alpaca with system and history, on a text model with a chat template
    "alpaca_system_history": ("demo-text-sft", [ALPACA_SYS_HISTORY, {**ALPACA_SYS_HISTORY, "output": "Cloudy"}]),
    # TRL conversational prompt/completion
    "trl_conversational_pc": ("demo-text-sft", [
        {"prompt": [{"role": "user", "content": f"What is {i}+1?"}],
         "completion": [{"role": "assistant", "content": str(i + 1)}]} for i in range(2)]),
    # TRL implicit prompt, plain text
    "trl_implicit_text": ("demo-text-dpo", [{"chosen": f"The value of B is {7 + i}.", "rejected": "The value of B is 2."}
                                            for i in range(2)]),
    # ms-swift DPO: messages end with the chosen answer, rejected_response the worse one
    "swift_rejected_response": ("demo-text-dpo", [
        {"messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": f"{i}+1?"},
                      {"role": "assistant", "content": str(i + 1)}], "rejected_response": "I don't know"}
        for i in range(2)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NEW_SHAPES))
def test_trl_trains_on_other_tools_shapes(demo_preset, tmp_path, name):
    from trainer_core.run.engine import run_training

    preset, rows = NEW_SHAPES[name]
    data = jsonl(tmp_path / f"{name}.jsonl", rows)
    p = demo_preset(preset, f"data.path={data}", "data.eval_fraction=0", "training.max_steps=2",
                    "training.micro_batch_size=2", "samples.every_steps=0")
    result = run_training(p)
    assert result.status == "completed", result.error
    assert result.steps == 2 and result.final_loss is not None


@pytest.mark.slow
def test_the_demo_template_has_no_tool_support(demo):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo.model)
    assert tokenizer.chat_template and template_supports_tools(tokenizer) is False
