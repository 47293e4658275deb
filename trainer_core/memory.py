"""Training memory, per component, from a model's shape and the run's settings. Pure functions.

The model behind every number is written out in docs/memory.md (with sources and the accuracy
measured on an H100). In short, the peak that torch's allocator sees is

    weights + LoRA weights + gradients + optimizer states + stored activations + logits/loss + transients

and the memory the GPU must have free adds the CUDA context and allocator fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trainer_core.model_info import ModelInfo

GIB = 2**30
MIB = 2**20
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# --- 4-bit NF4 (bitsandbytes): 0.5 byte per weight, one absmax per 64-weight block. Double quantization
# stores that absmax in 8 bits with an fp32 constant per 256 blocks (QLoRA paper, section 3).
NF4_BLOCK = 64
NF4_DQ_BLOCK = 256
# --- 8-bit (LLM.int8): 1 byte per weight plus an fp32 scale per output row.

# Bytes saved per token, per decoder layer, for backward (bf16/fp16 activations; fp32 doubles the 2-byte
# terms). Derived in docs/memory.md from what autograd keeps for a Llama-style block with SDPA attention:
#   2 RMSNorms keep their fp32 input (4h each); attention/MLP inputs (2h each); SDPA keeps q, k, v, out
#   (2h + 4kv + 2h); o_proj input (2h); SwiGLU keeps gate/up outputs, the activation and the product (8I).
#   Each LoRA-adapted linear keeps a copy of its input in the compute dtype (2 x in_features).
NORM_BYTES_PER_H = 8  # two norms, fp32 inputs
# Logits: bf16 logits (kept in the output) + their fp32 copy + log-softmax for the loss, and the
# gradient in backward. Measured on an H100, see docs/memory.md.
LOGIT_BYTES_SFT = 12.0
# DPO: TRL's selective log-softmax over chosen+rejected, plus the reference pass (no grad).
LOGIT_BYTES_DPO = 8.0
CUDA_CONTEXT_BYTES = 600 * MIB  # CUDA context + cuBLAS workspace: outside torch's allocator
FRAGMENTATION = 0.10  # reserved beyond allocated, as a share of the allocated peak

OPTIMIZER_STATE_BYTES = {
    # bytes per trainable parameter, for parameters of `dtype_bytes` (AdamW keeps 2 states like the param)
    "adamw_torch": lambda b: 2 * b,
    "adamw_torch_fused": lambda b: 2 * b,
    "adamw_hf": lambda b: 2 * b,
    "adamw_8bit": lambda b: 2,
    "adamw_bnb_8bit": lambda b: 2,
    "paged_adamw_8bit": lambda b: 2,
    "paged_adamw_32bit": lambda b: 8,
    "adafactor": lambda b: 0.1 * b,  # factored second moment: rows + columns, ~negligible
    "sgd": lambda b: 0,
    "lion_8bit": lambda b: 1,
    "paged_lion_8bit": lambda b: 1,
    "lion_32bit": lambda b: 4,
}


@dataclass(frozen=True)
class TrainSettings:
    task: str = "sft"  # sft | dpo
    precision: str = "bf16"  # bf16 | fp16 | fp32 (resolved, not auto)
    quantization: str = "none"  # none | 8bit | 4bit
    lora: bool = True
    lora_r: int = 16
    lora_targets: Any = "auto"
    lora_dropout: float = 0.0
    train_vision_tower: bool = False
    micro_batch_size: int = 1
    text_tokens: int = 512  # per sample (prompt + answer; for DPO prompt + the longer answer)
    images_per_sample: float = 0.0
    image_tokens_per_image: int = 0
    vision_patches_per_image: int = 0  # patches the vision encoder sees per image (all tiles)
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"

    @property
    def seq_len(self) -> int:
        return int(self.text_tokens + round(self.images_per_sample * self.image_tokens_per_image))


@dataclass(frozen=True)
class MemoryEstimate:
    # bytes per component; their sum is `peak_allocated`
    components: dict[str, int]
    peak_allocated: int
    # what must be free on the GPU: peak + fragmentation + CUDA context
    required: int
    seq_len: int
    trainable_params: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weight_bytes(info: ModelInfo, s: TrainSettings) -> int:
    dtype = DTYPE_BYTES[s.precision if s.quantization == "none" else ("bf16" if s.precision == "fp32" else s.precision)]
    if s.quantization == "none":
        return info.total_params * dtype
    # bitsandbytes quantizes every nn.Linear except the LM head; embeddings and norms stay in 16-bit.
    quantized = [ly for ly in info.linear_layers if ly.component != "lm_head"]
    q_params = sum(ly.in_features * ly.out_features for ly in quantized)
    rest = info.total_params - q_params - sum(
        (ly.out_features if _has_bias(ly) else 0) for ly in quantized) * 0
    if s.quantization == "8bit":
        q_bytes = q_params + 4 * sum(ly.out_features for ly in quantized)
    else:
        blocks = math.ceil(q_params / NF4_BLOCK)
        q_bytes = q_params // 2 + blocks + 4 * math.ceil(blocks / NF4_DQ_BLOCK)
    return q_bytes + rest * dtype


def _has_bias(_layer: Any) -> bool:  # biases are tiny; they stay unquantized and are counted in `rest`
    return False


def lora_param_dtype_bytes(s: TrainSettings) -> int:
    """PEFT keeps adapters in fp32 (autocast_adapter_dtype); TRL casts them to bf16 on quantized models."""
    return 2 if s.quantization != "none" else 4


def trainable_params(info: ModelInfo, s: TrainSettings) -> int:
    if s.lora:
        return info.lora_params(s.lora_r, s.lora_targets, include_vision=s.train_vision_tower)
    return info.total_params


def _layer_activation_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int) -> float:
    """Bytes kept for backward per token for one decoder layer (no checkpointing)."""
    t = info.text
    h, inter, kv = t.hidden_size, t.intermediate_size, t.num_kv_heads * t.head_dim
    unit = act_bytes / 2  # the formula is written for 2-byte activations
    base = NORM_BYTES_PER_H * h * (act_bytes / 2 if act_bytes == 4 else 1) + unit * (
        2 * h + 2 * h  # attention and MLP inputs
        + 2 * h + 4 * kv + 2 * h  # SDPA: q, k, v, output
        + 2 * h  # o_proj input (contiguous copy of the attention output)
        + 8 * inter  # SwiGLU: gate out, up out, act(gate), product
    )
    if s.lora:
        adapted = [ly for ly in info.lora_targets(s.lora_targets, s.train_vision_tower) if ly.component == "language"]
        per_layer_in = sum(ly.in_features for ly in adapted) / max(1, t.num_layers)
        base += unit * 2 * per_layer_in
        if s.lora_dropout > 0:
            base += per_layer_in  # dropout mask, 1 byte per element
    return base


def _vision_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int) -> tuple[int, int]:
    """(stored, transient) bytes for the vision encoder over one micro-batch."""
    v = info.vision
    if v is None or s.images_per_sample <= 0 or s.vision_patches_per_image <= 0:
        return 0, 0
    patches = s.micro_batch_size * s.images_per_sample * s.vision_patches_per_image
    if s.task == "dpo":
        patches *= 2  # chosen and rejected each carry the image
    # One layer's working set: the MLP intermediate dominates (attention is SDPA, linear in tokens).
    transient = patches * act_bytes * (v.intermediate_size + 4 * v.hidden_size)
    stored = 0
    if s.train_vision_tower or (not s.lora and info.params.get("vision", 0)):
        # A ViT block: 2 LayerNorm inputs, qkv input, SDPA q/k/v/out, out-proj input, fc1 in, GELU in, fc2 in
        per_layer = act_bytes * (2 * v.hidden_size + 5 * v.hidden_size + 2 * v.hidden_size + 2 * v.intermediate_size)
        layers = 1 if s.gradient_checkpointing else v.num_layers
        stored = patches * per_layer * layers
        if s.gradient_checkpointing:
            stored += patches * act_bytes * v.hidden_size * v.num_layers
    return int(stored), int(transient)


def estimate_memory(info: ModelInfo, s: TrainSettings) -> MemoryEstimate:
    notes: list[str] = []
    compute = "bf16" if (s.quantization != "none" and s.precision == "fp32") else s.precision
    act_bytes = DTYPE_BYTES[compute]
    weights = _weight_bytes(info, s)
    trainable = trainable_params(info, s)
    if s.lora:
        p_bytes = lora_param_dtype_bytes(s)
        lora_w = trainable * p_bytes
    else:
        p_bytes = DTYPE_BYTES[s.precision]
        lora_w = 0
    grads = trainable * p_bytes
    opt_fn = OPTIMIZER_STATE_BYTES.get(s.optimizer)
    if opt_fn is None:
        notes.append(f"optimizer {s.optimizer!r} is not modelled; counted as AdamW")
        opt_fn = OPTIMIZER_STATE_BYTES["adamw_torch"]
    optimizer = int(trainable * opt_fn(p_bytes))
    # foreach optimizers build temporaries the size of one state during the step
    opt_transient = trainable * p_bytes if not s.optimizer.startswith(("paged", "adamw_8bit", "adamw_bnb")) else 0

    rows = s.micro_batch_size * (2 if s.task == "dpo" else 1)  # DPO: chosen + rejected in one forward
    tokens = rows * s.seq_len
    layers = info.text.num_layers
    per_layer = _layer_activation_bytes(info, s, act_bytes)
    if s.gradient_checkpointing:
        # Each layer keeps only its input; backward recomputes one layer at a time.
        activations = tokens * (layers * act_bytes * info.text.hidden_size + per_layer)
    else:
        activations = tokens * layers * per_layer
    vocab = info.text.vocab_size
    logits = tokens * vocab * (LOGIT_BYTES_DPO if s.task == "dpo" else LOGIT_BYTES_SFT)
    vision_stored, vision_transient = _vision_bytes(info, s, act_bytes)
    components = {
        "weights": int(weights),
        "lora": int(lora_w),
        "gradients": int(grads),
        "optimizer": int(optimizer),
        "activations": int(activations + vision_stored),
        "logits": int(logits),
        "transient": int(max(vision_transient, opt_transient)),
    }
    peak = sum(components.values())
    required = int(peak * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES)
    if s.precision == "fp16" and not s.lora:
        notes.append("full fine-tuning in fp16 is unstable without fp32 master weights; prefer bf16")
    return MemoryEstimate(components, peak, required, s.seq_len, trainable, notes)


def with_changes(s: TrainSettings, **changes: Any) -> TrainSettings:
    return replace(s, **changes)
