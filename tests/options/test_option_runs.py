"""Each option trains the demo for 2 steps through the function `vlmtune train --headless` calls, and its run
folder shows it took effect; chat and export work with (or clearly refuse) each adapter type."""

from __future__ import annotations

import json

import pytest

from trainer_core.base.errors import EXIT_OK
from tui.cli.train import train

pytestmark = pytest.mark.slow
QUICK = ("training.max_steps=2", "samples.every_steps=0", "samples.prompts=[]", "data.eval_fraction=0")


def headless(demo_preset, name, *sets):
    preset = demo_preset(name, *QUICK, *sets)
    rc = train(preset, None, headless=True)
    from pathlib import Path

    (run,) = sorted(Path(preset.output_dir).iterdir())
    summary = json.loads((run / "summary.json").read_text())
    return rc, run, summary


def adapter_config(run):
    return json.loads((run / "adapter" / "adapter_config.json").read_text())


@pytest.mark.parametrize("field", ["use_dora", "use_rslora"])
def test_dora_and_rslora_are_in_the_saved_adapter(demo_preset, field):
    rc, run, summary = headless(demo_preset, "demo-sft", f"lora.{field}=true")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    config = adapter_config(run)
    assert config[field] is True and config["peft_type"] == "LORA"
    other = {"use_dora": "use_rslora", "use_rslora": "use_dora"}[field]
    assert config[other] is False


def test_prompt_tuning_on_the_text_demo_then_chat_and_a_clear_export_refusal(demo_preset, tmp_path):
    from trainer_core.chat import GenerationSettings, generate, load_for_chat
    from trainer_core.export.merge import export_merged
    from trainer_core.model.loading import ModelLoadError

    rc, run, summary = headless(demo_preset, "demo-text-sft", "adapter=prompt_tuning",
                                "prompt_tuning.num_virtual_tokens=8", "prompt_tuning.init_text=Answer with a letter")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    config = adapter_config(run)
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 8
    assert config["prompt_tuning_init"] == "TEXT"
    assert summary["trainable_params"] == 8 * 64  # 8 virtual tokens x the demo's hidden size
    loaded = load_for_chat(None, run)
    out = generate(loaded.model, loaded.processing_class, False, "Chart: A=3. Which bar is the highest?",
                   None, GenerationSettings(max_new_tokens=3))
    assert isinstance(out, str)
    with pytest.raises(ModelLoadError, match="PROMPT_TUNING adapter, which cannot be merged"):
        export_merged(run, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_prefix_tuning_trains_and_chats(demo_preset):
    from trainer_core.chat import GenerationSettings, generate, load_for_chat

    rc, run, summary = headless(demo_preset, "demo-text-sft", "adapter=prefix_tuning")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    assert adapter_config(run)["peft_type"] == "PREFIX_TUNING"
    loaded = load_for_chat(None, run)
    assert isinstance(generate(loaded.model, loaded.processing_class, False, "Chart: A=3. Which?", None,
                               GenerationSettings(max_new_tokens=2)), str)


def test_adapter_none_is_full_fine_tuning(demo_preset):
    rc, run, summary = headless(demo_preset, "demo-text-sft", "adapter=none")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    assert summary["trainable_params"] == summary["total_params"]
    assert (run / "model" / "config.json").exists() and not (run / "adapter").exists()


def test_tensorboard_writes_its_events_into_the_run_folder(demo_preset, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "")  # recorded: the run's setting is undone after the test
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    rc, run, summary = headless(demo_preset, "demo-text-sft", "training.report_to=tensorboard",
                                "training.packing=true", "training.padding_free=true", "lora.use_dora=true")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_a_dora_adapter_merges(demo_preset, tmp_path):
    from trainer_core.export.merge import export_merged

    rc, run, _ = headless(demo_preset, "demo-text-sft", "lora.use_dora=true", "lora.init_lora_weights=gaussian")
    assert rc == EXIT_OK
    out = export_merged(run, tmp_path / "merged")
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()


@pytest.mark.parametrize(("sets", "message"), [
    (("adapter=prompt_tuning",), "adapter: prompt_tuning is for text models"),
    (("training.packing=true",), "training.packing: TRL supports it for text data only"),
])
def test_text_only_options_are_refused_for_the_vlm_before_weights_load(demo_preset, sets, message):
    rc, run, summary = headless(demo_preset, "demo-sft", *sets)
    assert rc != EXIT_OK and summary["status"] == "failed"
    assert message in summary["error"]
    assert not (run / "error.txt").exists()  # a user's mistake, said in words: no traceback kept


def test_image_max_pixels_reaches_the_vlm_processor_and_is_saved_with_the_adapter(demo_preset):
    rc, run, summary = headless(demo_preset, "demo-sft", "data.image_max_pixels=16384")
    assert rc == EXIT_OK and summary["status"] == "completed", summary.get("error")
    saved = json.loads((run / "adapter" / "processor_config.json").read_text())
    assert saved["image_processor"]["size"] == {"longest_edge": 128}  # 16384 px = 128 x 128: 4 demo tiles of 32
