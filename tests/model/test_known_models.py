"""The offline registry of model shapes: every entry builds on the meta device at its published size."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from trainer_core.model import known as known_models
from trainer_core.model.known import (
    KNOWN_MODELS,
    known_config,
    known_config_dict,
    known_meta,
    published_params,
)

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "trainer_core" / "model" / "registry"


def _build_empty(hub_id: str):
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cfg = known_config(hub_id)
    auto = (
        AutoModelForImageTextToText if "vision_config" in known_config_dict(hub_id) else AutoModelForCausalLM
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with init_empty_weights():
            model = auto.from_config(cfg)
    # init_empty_weights un-ties a tied lm_head (a fresh meta tensor); re-tie so it is counted once.
    model.tie_weights()
    return model


@pytest.mark.parametrize("hub_id", KNOWN_MODELS)
def test_meta_build_matches_published_size(hub_id):
    model = _build_empty(hub_id)
    assert all(p.device.type == "meta" for p in model.parameters())
    built = model.num_parameters()
    published = published_params(hub_id)
    assert published is not None
    assert abs(built - published) / published < 0.03, (
        f"{hub_id}: built {built:,} vs published {published:,.0f}"
    )


def test_empty_model_helper_ties_embeddings():
    model = known_models.empty_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert abs(model.num_parameters() - 494e6) / 494e6 < 0.01
    assert known_models.empty_model("nobody/nothing") is None


def test_registry_files_match_known_models():
    files = sorted(p.name for p in REGISTRY.glob("*.json"))
    assert files == sorted(known_models.registry_filename(h) for h in KNOWN_MODELS)
    assert len(set(KNOWN_MODELS)) == len(KNOWN_MODELS) == 16
    for hub_id in KNOWN_MODELS:
        raw = json.loads((REGISTRY / known_models.registry_filename(hub_id)).read_text(encoding="utf-8"))
        meta = raw["_vlmtune"]
        assert meta["hub_id"] == hub_id
        assert isinstance(meta["published_params"], (int, float)) and meta["published_params"] > 1e8
        assert meta["source"]
        assert raw["model_type"] and raw["architectures"]


def test_lookup_is_case_insensitive():
    d = known_config_dict("huggingfacetb/smolvlm-instruct")
    assert d is not None and d["model_type"] == "idefics3"
    assert known_config_dict("QWEN/QWEN2.5-7B-INSTRUCT")["vocab_size"] == 152064
    assert published_params("META-LLAMA/llama-3.2-1b-instruct") == pytest.approx(1.24e9)
    assert known_meta("Qwen/qwen2-vl-2b-instruct")["hub_id"] == "Qwen/Qwen2-VL-2B-Instruct"
    assert known_config("LLAVA-HF/LLAVA-1.5-7B-HF").model_type == "llava"


@pytest.mark.parametrize("bad", ["nobody/nothing", "", "Qwen/Qwen2.5-0.5B", "SmolVLM-Instruct", None])
def test_unknown_ids_give_none(bad):
    assert known_config_dict(bad) is None
    assert published_params(bad) is None
    assert known_meta(bad) is None
    assert known_config(bad) is None


def test_config_dict_strips_metadata_and_is_a_copy():
    d = known_config_dict("Qwen/Qwen2-VL-7B-Instruct")
    assert "_vlmtune" not in d
    d["vision_config"]["depth"] = 1
    d["hidden_size"] = 1
    again = known_config_dict("Qwen/Qwen2-VL-7B-Instruct")
    assert again["vision_config"]["depth"] == 32 and again["hidden_size"] == 3584


# The shapes most likely to be gotten wrong, pinned explicitly (text fields read through get_text_config()).
TEXT_SHAPES = {
    # hub id: (hidden, layers, heads, kv heads, intermediate, vocab, tie_word_embeddings)
    "HuggingFaceTB/SmolVLM-256M-Instruct": (576, 30, 9, 3, 1536, 49280, False),
    "HuggingFaceTB/SmolVLM-500M-Instruct": (960, 32, 15, 5, 2560, 49280, False),
    "HuggingFaceTB/SmolVLM-Instruct": (2048, 24, 32, 32, 8192, 49155, False),
    "HuggingFaceM4/Idefics3-8B-Llama3": (4096, 32, 32, 8, 14336, 128259, False),
    "Qwen/Qwen2-VL-2B-Instruct": (1536, 28, 12, 2, 8960, 151936, True),
    "Qwen/Qwen2-VL-7B-Instruct": (3584, 28, 28, 4, 18944, 152064, False),
    "Qwen/Qwen2.5-VL-3B-Instruct": (2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-VL-7B-Instruct": (3584, 28, 28, 4, 18944, 152064, False),
    "llava-hf/llava-1.5-7b-hf": (4096, 32, 32, 32, 11008, 32064, False),
    "meta-llama/Llama-3.2-1B-Instruct": (2048, 16, 32, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-3B-Instruct": (3072, 28, 24, 8, 8192, 128256, True),
    "meta-llama/Llama-3.1-8B-Instruct": (4096, 32, 32, 8, 14336, 128256, False),
    "Qwen/Qwen2.5-0.5B-Instruct": (896, 24, 14, 2, 4864, 151936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": (1536, 28, 12, 2, 8960, 151936, True),
    "Qwen/Qwen2.5-3B-Instruct": (2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-7B-Instruct": (3584, 28, 28, 4, 18944, 152064, False),
}


def test_text_shapes_cover_every_model():
    assert sorted(TEXT_SHAPES) == sorted(KNOWN_MODELS)


@pytest.mark.parametrize("hub_id", KNOWN_MODELS)
def test_text_shapes(hub_id):
    cfg = known_config(hub_id)
    t = cfg.get_text_config()
    hidden, layers, heads, kv, inter, vocab, tie = TEXT_SHAPES[hub_id]
    got = (
        t.hidden_size,
        t.num_hidden_layers,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.intermediate_size,
        t.vocab_size,
        bool(cfg.tie_word_embeddings),
    )
    assert got == (hidden, layers, heads, kv, inter, vocab, tie)


@pytest.mark.parametrize(
    ("hub_id", "hidden", "layers", "image_size", "patch_size", "scale_factor"),
    [
        ("HuggingFaceTB/SmolVLM-256M-Instruct", 768, 12, 512, 16, 4),
        ("HuggingFaceTB/SmolVLM-500M-Instruct", 768, 12, 512, 16, 4),
        ("HuggingFaceTB/SmolVLM-Instruct", 1152, 27, 384, 14, 3),
        ("HuggingFaceM4/Idefics3-8B-Llama3", 1152, 27, 364, 14, 2),
    ],
)
def test_idefics3_vision_shapes(hub_id, hidden, layers, image_size, patch_size, scale_factor):
    cfg = known_config(hub_id)
    v = cfg.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size) == (
        hidden,
        layers,
        image_size,
        patch_size,
    )
    assert cfg.scale_factor == scale_factor


def test_qwen_and_llava_vision_shapes():
    for hub_id, out in [("Qwen/Qwen2-VL-2B-Instruct", 1536), ("Qwen/Qwen2-VL-7B-Instruct", 3584)]:
        v = known_config(hub_id).vision_config
        assert (v.depth, v.embed_dim, v.hidden_size, v.mlp_ratio, v.num_heads, v.spatial_merge_size) == (
            32,
            1280,
            out,
            4,
            16,
            2,
        )
    for hub_id, out in [("Qwen/Qwen2.5-VL-3B-Instruct", 2048), ("Qwen/Qwen2.5-VL-7B-Instruct", 3584)]:
        v = known_config(hub_id).vision_config
        assert (v.depth, v.hidden_size, v.intermediate_size, v.out_hidden_size, v.window_size) == (
            32,
            1280,
            3420,
            out,
            112,
        )
        assert list(v.fullatt_block_indexes) == [7, 15, 23, 31]
    v = known_config("llava-hf/llava-1.5-7b-hf").vision_config
    assert (v.model_type, v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size) == (
        "clip_vision_model",
        1024,
        24,
        336,
        14,
    )


def test_import_does_not_pull_in_torch_or_transformers():
    code = (
        "import sys, trainer_core.model.known as km\n"
        "assert km.known_config_dict('Qwen/Qwen2.5-0.5B-Instruct')['hidden_size'] == 896\n"
        "assert km.published_params('qwen/qwen2.5-0.5b-instruct') == 494e6\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing known_models pulled in: {out.stdout.strip()}"


def test_registry_is_package_data():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "model/registry/*.json" in pyproject["tool"]["setuptools"]["package-data"]["trainer_core"]
