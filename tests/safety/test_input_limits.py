"""Every input has a limit: a huge image, an enormous row or a chat template that never finishes becomes a
clear problem naming it, within bounded time and memory, instead of a hang, an OOM kill or a traceback."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest

from trainer_core.base.limits import MAX_ROW_CHARS, ChatTemplateError

RUNAWAY = "{% for i in range(10**12) %}x{% endfor %}"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory) -> Path:
    """Three rows: a small image, an 11000 x 11000 one (121 MP) and one past Pillow's bomb limit, both tiny on
    disk (1-bit, one colour)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    Image.new("RGB", (32, 32), "white").save(root / "ok.png")
    Image.new("1", (11_000, 11_000)).save(root / "big.png")
    side = math.isqrt(2 * Image.MAX_IMAGE_PIXELS) + 1000  # above the size Pillow refuses to open
    Image.new("1", (side, side)).save(root / "bomb.png")
    assert (root / "big.png").stat().st_size < 200_000 and (root / "bomb.png").stat().st_size < 200_000
    return _jsonl(root / "rows.jsonl", [{"images": [name], "prompt": "What is shown?", "completion": "A chart."}
                                        for name in ("ok.png", "big.png", "bomb.png")])


def test_data_check_names_huge_images_by_row(image_rows, cli):
    started = time.monotonic()
    result = cli("data", "check", str(image_rows), "--task", "sft")
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert ("line 2, column 'images': image is 11,000 x 11,000 pixels (121.0 megapixels; data.max_image_pixels "
            "is 40,000,000)" in result.stdout)
    assert "Resize it, or raise data.max_image_pixels" in result.stdout
    assert "line 3, column 'images': image is too large to open" in result.stdout and "bomb.png" in result.stdout
    assert "1 of 3 rows are usable" in result.stdout
    print(f"data check with two huge images: {took:.1f} s")


def test_prepare_skips_huge_images_with_skip_invalid(image_rows):
    from trainer_core.config.presets import DataSection
    from trainer_core.data.prepare import prepare_dataset
    from trainer_core.data.problems import DataError

    prepared = prepare_dataset(DataSection(path=str(image_rows), skip_invalid=True), "sft", conversational=True,
                               is_vlm=True)
    assert prepared.rows == 1 and len(prepared.train) == 1
    assert [(p.line, p.column) for p in prepared.skipped] == [(2, "images"), (3, "images")]
    with pytest.raises(DataError, match="line 3, column 'images': image is too large to open"):
        prepare_dataset(DataSection(path=str(image_rows)), "sft", conversational=True, is_vlm=True)


def test_the_pixel_limit_is_a_preset_field(image_rows, demo_preset):
    from trainer_core.config.presets import PresetError
    from trainer_core.data.check import check_data

    assert demo_preset("demo-sft").data.max_image_pixels == 40_000_000
    assert demo_preset("demo-sft", "data.max_image_pixels=150000000").data.max_image_pixels == 150_000_000
    with pytest.raises(PresetError, match="data.max_image_pixels: must be positive"):
        demo_preset("demo-sft", "data.max_image_pixels=0")
    # Raised past 121 MP, the big image passes; Pillow's own limit still stops the bomb.
    report = check_data(str(image_rows), "sft", max_image_pixels=150_000_000)
    assert [p.line for p in report.problems] == [3]


def test_data_check_names_a_4mb_row_and_stays_fast(demo, tmp_path, cli):
    from trainer_core.data.check import check_data

    data = _jsonl(tmp_path / "long.jsonl", [{"prompt": "What is the value of A?", "completion": "3"},
                                            {"prompt": "word " * 800_000, "completion": "ok"}])
    started = time.monotonic()
    report = check_data(str(data), "sft", model=str(demo.text_model))
    in_process = time.monotonic() - started
    assert [(p.line, p.column) for p in report.problems] == [(2, "prompt")]
    assert f"over the limit of {MAX_ROW_CHARS:,}" in report.problems[0].message
    assert in_process < 8, f"took {in_process:.1f} s (tokenizing the whole row took ~19 s)"
    started = time.monotonic()
    result = cli("data", "check", str(data), "--task", "sft", "--model", str(demo.text_model))
    took = time.monotonic() - started
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "line 2, column 'prompt': the row holds 4,000,002 characters of text" in result.stdout
    print(f"4 MB row: check_data {in_process:.1f} s in process, `vlmtune data check --model` {took:.1f} s")


def test_token_counts_of_a_long_text_are_bounded_and_extrapolated(demo):
    from transformers import AutoTokenizer

    from trainer_core.data.stats import TOKENIZE_CHARS, stats_from_rows

    tokenizer = AutoTokenizer.from_pretrained(demo.text_model)
    text = "The value of B is 7. " * 40_000  # 840k characters: under the row limit, 13 x the tokenized prefix
    started = time.monotonic()
    stats = stats_from_rows([{"prompt": "q", "completion": text}], 1, "prompt_completion", tokenizer)
    took = time.monotonic() - started
    exact = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert abs(stats.answer_tokens.max - exact) / exact < 0.01
    assert stats.token_source == f"tokenizer (1 text over {TOKENIZE_CHARS:,} characters extrapolated from their start)"
    assert took < 3, f"took {took:.1f} s"


def test_a_long_row_is_previewed_by_its_start(tmp_path, cli):
    data = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "long " * 100_000, "completion": "ok"}])
    result = cli("data", "check", str(data), "--task", "sft")
    assert result.returncode == 0, result.stderr
    assert "more characters)" in result.stdout and len(result.stdout) < 10_000


@pytest.fixture
def runaway_model(demo, tmp_path) -> Path:
    """The demo text model with a chat template that would loop 10^12 times."""
    model = Path(shutil.copytree(demo.text_model, tmp_path / "runaway-model"))
    (model / "chat_template.jinja").write_text(RUNAWAY + (model / "chat_template.jinja").read_text())
    return model


def test_data_check_and_chat_refuse_a_runaway_chat_template(runaway_model, demo, cli):
    for args in (["data", "check", str(demo.data / "text_sft.jsonl"), "--task", "sft", "--model", str(runaway_model)],
                 ["chat", "--model", str(runaway_model), "--prompt", "What is the value of A?"]):
        started = time.monotonic()
        result = cli(*args, timeout=180)
        took = time.monotonic() - started
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "error: the model's chat template did not finish: it asks for a count or size of " \
               "1,000,000,000,000" in result.stderr
        assert str(runaway_model) in result.stderr
        print(f"`vlmtune {args[0]}` with a runaway template: {took:.1f} s")


@pytest.mark.parametrize(("template", "why"), [
    ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "steps"),
    ("{{ 'x' * 10**12 }}", "builds a value of 1,000,000,000,000 items"),
    ("{{ 'x'|center(10**10) }}", "asks for a count or size of 10,000,000,000"),
    ("{{ '%0999999999d' % 1 }}", "formats a field"),
    ("{{ 10 ** (10 ** 10) }}", "a number of"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "builds a value of 1,048,576 items"),
    ("{% set big = 'x' * 999999 %}{% macro m() %}{% for i in range(99999) %}{{ big }}{% endfor %}{% endmacro %}"
     "{{ m() }}", "builds a value of 99,998,900,001 items"),
    ("{% for i in range(200000) %}{% endfor %}", "allows 100,000"),
])
def test_runaway_templates_fail_fast_where_they_are_rendered(demo, template, why):
    from transformers import AutoProcessor, AutoTokenizer

    from trainer_core.chat import build_inputs
    from trainer_core.data.check import render_templated

    tokenizer = AutoTokenizer.from_pretrained(demo.text_model)
    processor = AutoProcessor.from_pretrained(demo.model)
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    started = time.monotonic()
    for owner, is_vlm in ((tokenizer, False), (processor, True)):
        owner.chat_template = template + owner.chat_template
        with pytest.raises(ChatTemplateError, match=why):
            render_templated(row, owner, is_vlm)
        with pytest.raises(ChatTemplateError, match="did not finish"):
            build_inputs(owner, is_vlm, [{"role": "user", "content": "Hi"}])
    assert time.monotonic() - started < 5


def test_working_templates_render_as_before(demo):
    from transformers import AutoProcessor

    from trainer_core.base.limits import check_chat_template
    from trainer_core.data.check import render_templated

    processor = AutoProcessor.from_pretrained(demo.model)
    check_chat_template(processor, True)
    row = {"images": [{"path": "chart.png"}], "messages": [{"role": "user", "content": "Which bar is the highest?"},
                                                           {"role": "assistant", "content": "C"}]}
    assert render_templated(row, processor, True) == ("<|im_start|>User:<image>Which bar is the highest?"
                                                      "<end_of_utterance>Assistant: C<end_of_utterance>")
