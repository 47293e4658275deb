"""Merge a run's LoRA adapter into its base weights and save a model that loads without PEFT."""

from __future__ import annotations

import json
from pathlib import Path

from trainer_core.base.atomic import atomic_write_dir
from trainer_core.chat import base_model_of, resolve_adapter
from trainer_core.model.loading import ModelLoadError, load_model

# PEFT adapter types whose weights merge_and_unload folds into the base model (DoRA and rsLoRA are LORA too).
MERGEABLE = ("LORA",)


def export_merged(run_or_adapter: str | Path, out: str | Path, *, base_model: str | None = None,
                  precision: str = "auto", trust_remote_code: bool = False) -> Path:
    """Write base + adapter merged (safetensors) with its processor/tokenizer to `out`."""
    from peft import PeftModel

    adapter = resolve_adapter(run_or_adapter)
    kind = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type", "LORA")
    if kind not in MERGEABLE:
        # Prompt and prefix tuning train extra inputs, not weight deltas: there is nothing to add to the weights.
        raise ModelLoadError(f"{adapter} is a {kind} adapter, which cannot be merged into the base weights (it "
                             "trains virtual tokens, not weight changes). Use it as it is: `vlmtune chat --adapter "
                             "RUN_DIR`, or PEFT's PeftModel.from_pretrained(base, ADAPTER); train with adapter: lora "
                             "for a mergeable model")
    base = base_model or base_model_of(adapter)
    if not base:
        raise ModelLoadError(f"{adapter} does not name its base model; pass --base-model")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the merged model")
    # Merging needs unquantized weights: load the base in the training precision, never 4/8-bit.
    loaded = load_model(base, precision=precision, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(loaded.model, str(adapter)).merge_and_unload()

    def fill(tmp: Path) -> None:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        loaded.processing_class.save_pretrained(str(tmp))

    return atomic_write_dir(out, fill)
