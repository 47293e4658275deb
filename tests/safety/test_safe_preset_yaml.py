"""Presets refuse YAML aliases (exponential "billion laughs" expansion, self-reference) and secrets (a token
in a preset is copied into every run folder and checkpoint), each with a message saying where and what to do."""

from __future__ import annotations

import time

import pytest
import yaml

from trainer_core.config.presets import PresetError, load_preset

# 9 levels of 9 aliases: 9**9 strings once expanded, from a few hundred bytes.
LAUGHS = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
BILLION_LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS


def demo_preset_text(demo, extra: str) -> str:
    raw = yaml.safe_load((demo.presets / "demo-text-sft.yaml").read_text())
    raw["model"]["name_or_path"] = str(demo.text_model)
    raw["data"]["path"] = str(demo.data / "text_sft.jsonl")
    return yaml.safe_dump(raw, sort_keys=False) + extra


def test_nested_aliases_are_refused_at_once_naming_the_line(tmp_path):
    preset = tmp_path / "laughs.yaml"
    preset.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    started = time.monotonic()
    with pytest.raises(PresetError) as err:
        load_preset(preset)
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert "line 2, column 8" in message and "aliases (*a) are not allowed in presets" in message


def test_a_self_referencing_alias_is_refused_not_a_recursion_error(tmp_path, cli):
    preset = tmp_path / "loop.yaml"
    preset.write_text("name: loop\ntask: sft\nmodel: &m\n  name_or_path: x\n  revision: *m\n")
    with pytest.raises(PresetError, match=r"line 5, column 13: aliases \(\*m\) are not allowed"):
        load_preset(preset)
    out = cli("check", str(preset))
    assert out.returncode == 2 and out.stderr.startswith("error: preset ") and "line 5" in out.stderr
    assert "RecursionError" not in out.stderr


@pytest.mark.parametrize(("extra", "field", "variable"), [
    ("  extra:\n    hub_token: hf_not_a_real_token\n", "training.extra.hub_token", "HF_TOKEN"),
    ("  extra:\n    report_to: [wandb]\n    wandb_api_key: 0123abcd\n", "training.extra.wandb_api_key",
     "WANDB_API_KEY"),
])
def test_secrets_in_a_preset_are_refused_naming_the_variable_to_use(demo, tmp_path, cli, extra, field, variable):
    text = demo_preset_text(demo, "").replace("training:\n", "training:\n" + extra, 1)
    preset = tmp_path / "secret.yaml"
    preset.write_text(text)
    with pytest.raises(PresetError, match=rf"{field}: looks like a secret.*set {variable} in the environment"):
        load_preset(preset)
    # The real command: refused before anything is written (no run folder holds the token).
    out = cli("train", str(preset), "--headless", "--set", f"output_dir={tmp_path / 'runs'}")
    assert out.returncode == 2 and field in out.stderr and variable in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_secret_given_with_set_is_refused_too(demo, tmp_path, cli):
    preset = tmp_path / "clean.yaml"
    preset.write_text(demo_preset_text(demo, ""))
    out = cli("check", str(preset), "--set", "training.extra.hub_token=hf_not_a_real_token")
    assert out.returncode == 2 and "training.extra.hub_token: looks like a secret" in out.stderr
    assert "hf_not_a_real_token" not in out.stderr + out.stdout


def test_tokenizer_tokens_are_not_secrets(demo, tmp_path):
    preset = tmp_path / "pad.yaml"
    preset.write_text(demo_preset_text(demo, "").replace("training:\n", "training:\n  extra:\n"
                                                         "    pad_token: <pad>\n    eos_token: <eos>\n", 1))
    assert load_preset(preset).training.extra == {"pad_token": "<pad>", "eos_token": "<eos>"}
