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

from trainer_core.model.info import LinearLayer, ModelInfo
from trainer_core.model.lora_targets import TrainedParts, select_targets, trained_parts

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
NORM_BYTES_PER_H = 8  # two norms, fp32 inputs
# fp32 LoRA adapters on a bf16 model keep extra input copies: fitted on an H100 (0.5-0.84 per input
# feature of the adapted layers, see docs/memory.md). bf16 adapters (QLoRA) keep none.
LORA_INPUT_BYTES = 0.7
# TRL >= 1.x computes the loss with a fused, tiled LM head: the (tokens x vocab) logits never exist.
# Its working set is a (4096 x 32768) tile in the compute dtype, forward and backward, plus an fp32
# gradient for the hidden states of the supervised tokens.
FUSED_HEAD_TOKENS = 4096
FUSED_HEAD_VOCAB = 32768
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
    # The preset's freeze_* (which parts train, for LoRA and full fine-tuning); `parts` reads them together with
    # train_vision_tower (the older field: vision tower and connector).
    freeze_vision_tower: bool = True
    freeze_multi_modal_projector: bool = True
    freeze_language_model: bool = False
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    text_tokens: int = 512  # per sample (prompt + answer; for DPO prompt + the longer answer)
    # supervised tokens per sample (the answer; None = every token, as for plain `messages` data)
    answer_tokens: int | None = None
    images_per_sample: float = 0.0
    image_tokens_per_image: int = 0
    vision_patches_per_image: int = 0  # patches the vision encoder sees per image (all tiles)
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch_fused"
    # lora | prompt_tuning | prefix_tuning | none; `lora` above is False exactly for none (full fine-tuning)
    adapter: str = "lora"
    use_dora: bool = False
    # prompt/prefix tuning: the trained virtual tokens (prompt tuning also lengthens every sequence by them)
    virtual_tokens: int = 0
    prefix_projection: bool = False

    @property
    def parts(self) -> TrainedParts:
        return trained_parts(self.freeze_vision_tower, self.freeze_multi_modal_projector, self.freeze_language_model,
                             self.train_vision_tower)

    @property
    def seq_len(self) -> int:
        prompt = self.virtual_tokens if self.adapter == "prompt_tuning" else 0
        return int(self.text_tokens + prompt + round(self.images_per_sample * self.image_tokens_per_image))


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


def compute_precision(precision: str, quantization: str) -> str:
    """The dtype a run computes in: quantized (4-bit/8-bit) layers compute in bf16 when the run says fp32
    (QLoRA has no fp32 compute); otherwise the run's own precision. The memory model, the planner, the wizard
    and the fit check all ask here (model/loading.py builds the BitsAndBytesConfig by the same rule)."""
    return "bf16" if quantization != "none" and precision == "fp32" else precision


def _weight_bytes(info: ModelInfo, s: TrainSettings) -> int:
    dtype = DTYPE_BYTES[compute_precision(s.precision, s.quantization)]
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


def adapted_layers(info: ModelInfo, s: TrainSettings) -> list[LinearLayer]:
    """The layers LoRA adapts: with target_modules auto, those of the parts that train (as the engine picks them)."""
    if s.lora_targets != "auto":
        return info.lora_targets(s.lora_targets)
    chosen = set(select_targets([ly.name for ly in info.linear_layers], parts=s.parts))
    return [ly for ly in info.linear_layers if ly.name in chosen]


# model/info.py's components by part: embeddings and the LM head belong to the language model (LLaMA-Factory's
# language_model keys include them), as in lora_targets.part_of.
PART_COMPONENTS = {"vision": ("vision",), "connector": ("connector",), "language": ("language", "embeddings", "lm_head")}


def full_trainable_params(info: ModelInfo, parts: TrainedParts) -> int:
    """Full fine-tuning: every weight of the parts that train (model/freeze.py sets requires_grad so)."""
    return sum(info.params.get(c, 0) for part, comps in PART_COMPONENTS.items() if parts.trains(part) for c in comps)


def trainable_params(info: ModelInfo, s: TrainSettings) -> int:
    """As PEFT's get_nb_trainable_parameters counts them (tests/options compares the two on the demo models)."""
    t = info.text
    if not s.lora:
        return full_trainable_params(info, s.parts)
    if s.adapter == "prompt_tuning":  # one embedding row per virtual token
        return s.virtual_tokens * t.hidden_size
    if s.adapter == "prefix_tuning":  # a key and a value per virtual token and layer
        d = t.num_kv_heads * t.head_dim  # PEFT's token_dim under grouped-query attention: the kv width
        kv = t.num_layers * 2 * d
        if not s.prefix_projection:
            return s.virtual_tokens * kv
        # an embedding of width d, then Linear(d, d) -> Tanh -> Linear(d, kv), with biases
        return s.virtual_tokens * d + (d * d + d) + (d * kv + kv)
    adapted = adapted_layers(info, s)
    # A (r x in) + B (out x r) per adapted layer
    n = sum(s.lora_r * (ly.in_features + ly.out_features) for ly in adapted)
    if s.use_dora:  # DoRA's magnitude vector: one per output feature of each adapted layer
        n += sum(ly.out_features for ly in adapted)
    return n


def dora_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int) -> tuple[float, int]:
    """(stored bytes per token, forward working set) DoRA adds. PEFT's DoRA keeps the base and the LoRA output of
    each adapted layer for the magnitude's gradient, and builds one layer's dense B @ A (fp32) and the weight's
    column norm in the forward."""
    if not (s.lora and s.adapter == "lora" and s.use_dora):
        return 0.0, 0
    adapted = [ly for ly in adapted_layers(info, s) if ly.component == "language"]
    per_token = sum(ly.out_features for ly in adapted) * (act_bytes + lora_param_dtype_bytes(s))
    dense = max((ly.in_features * ly.out_features for ly in adapted), default=0) * 4 * 2
    return per_token, dense


def _layer_activation_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int) -> float:
    """Bytes kept for backward per token for one decoder layer (no checkpointing)."""
    t = info.text
    h, inter, kv = t.hidden_size, t.intermediate_size, t.num_kv_heads * t.head_dim
    unit = act_bytes / 2  # the formula is written for 2-byte activations
    base = NORM_BYTES_PER_H * h * (2 if act_bytes == 4 else 1) + unit * (
        2 * h + 2 * h  # attention and MLP inputs
        + 2 * h + 4 * kv + 2 * h  # SDPA: q, k, v, output
        + 2 * h  # o_proj input (contiguous copy of the attention output)
        + 8 * inter  # SwiGLU: gate out, up out, act(gate), product
    )
    if s.lora and s.adapter == "lora":  # prompt/prefix tuning adapt no layer: only the frozen model's activations
        adapted = [ly for ly in adapted_layers(info, s) if ly.component == "language"]
        per_layer_in = sum(ly.in_features for ly in adapted) / max(1, t.num_layers)
        if s.quantization == "none" and act_bytes == 2:
            base += LORA_INPUT_BYTES * per_layer_in
        if s.lora_dropout > 0:
            base += per_layer_in  # dropout mask, 1 byte per element (measured within 6%)
    return base


def _vision_patches(s: TrainSettings) -> float:
    rows = s.micro_batch_size * (2 if s.task == "dpo" else 1)  # chosen and rejected each carry the image
    return rows * s.images_per_sample * s.vision_patches_per_image


def _vision_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int) -> tuple[int, int]:
    """(stored, transient) bytes for the vision encoder over one micro-batch.

    A frozen vision tower records no graph, so it only needs its forward working set. It keeps activations
    when it trains (LoRA on its layers, or its weights in full fine-tuning), and also under gradient
    checkpointing: PEFT then makes the input embeddings require grad (enable_input_require_grads), which records
    the vision tower too (measured: docs/memory.md). A trained connector alone needs no vision graph.
    """
    v = info.vision
    patches = _vision_patches(s)
    if v is None or patches <= 0:
        return 0, 0
    unit = act_bytes / 2
    h, inter = v.hidden_size, v.intermediate_size
    # One ViT block, as for the decoder: 2 LayerNorm inputs, qkv input, SDPA q/k/v/out, out-proj input,
    # fc1 input, GELU input, fc2 input.
    per_layer = unit * (4 * h + 2 * h + 8 * h + 2 * h + 2 * h + 4 * inter)
    transient = patches * unit * 2 * (inter + 4 * h)  # the largest forward intermediates of one block
    records = (s.parts.vision and s.adapter in ("lora", "none")) or s.gradient_checkpointing
    if not records:
        return 0, int(transient)
    if s.gradient_checkpointing:
        stored = patches * (v.num_layers * unit * 2 * h + per_layer)
    else:
        stored = patches * v.num_layers * per_layer
    return int(stored), int(transient)


def _fused_head_bytes(info: ModelInfo, s: TrainSettings, act_bytes: int, rows: int) -> int:
    supervised = rows * (s.answer_tokens if s.answer_tokens is not None else s.seq_len)
    tile = min(supervised, FUSED_HEAD_TOKENS) * min(info.text.vocab_size, FUSED_HEAD_VOCAB) * act_bytes
    out = 2 * tile + supervised * info.text.hidden_size * 4
    if not s.lora and s.parts.language:  # the LM head trains: an fp32 gradient for its weight, built in the kernel
        out += info.text.vocab_size * info.text.hidden_size * 4
    return int(out)


def estimate_memory(info: ModelInfo, s: TrainSettings) -> MemoryEstimate:
    notes: list[str] = []
    act_bytes = DTYPE_BYTES[compute_precision(s.precision, s.quantization)]
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

    rows = s.micro_batch_size * (2 if s.task == "dpo" else 1)  # DPO: chosen + rejected in one forward
    tokens = rows * s.seq_len
    layers = info.text.num_layers
    per_layer = _layer_activation_bytes(info, s, act_bytes)
    if s.gradient_checkpointing:
        # Each layer keeps only its input; backward recomputes one layer at a time.
        activations = tokens * (layers * act_bytes * info.text.hidden_size + per_layer)
    else:
        activations = tokens * layers * per_layer
    dora_token, dora_dense = dora_bytes(info, s, act_bytes)
    if dora_token:
        # Counted with the activations (recomputed per layer under checkpointing, like the rest of a layer).
        dora_stored = tokens * (dora_token / max(1, layers) if s.gradient_checkpointing else dora_token)
        activations += int(dora_stored + dora_dense)
        notes.append(f"DoRA adds {(dora_stored + dora_dense) / GIB:.2f} GiB of activations over plain LoRA")
    logits = _fused_head_bytes(info, s, act_bytes, rows)
    vision_stored, vision_transient = _vision_bytes(info, s, act_bytes)
    # foreach optimizers build temporaries the size of the parameters during the step
    opt_transient = 0 if s.optimizer.startswith(("paged", "adamw_8bit", "adamw_bnb")) else trainable * p_bytes
    # Gradients from earlier micro-batches live through the forward only with accumulation; with one
    # micro-batch per step they are freed (zero_grad) before the forward and rebuilt as activations free.
    grads_in_forward = grads if s.gradient_accumulation_steps > 1 else 0
    forward_peak = activations + vision_stored + logits + grads_in_forward
    # Measured: the vision forward's working set adds to the peak (image features and the merged
    # embeddings stay alive into the decoder's forward); DPO's reference pass encodes the images again.
    vision_forward = vision_transient * (2 if s.task == "dpo" else 1)
    forward_peak += vision_forward
    # The optimizer step holds all gradients plus foreach temporaries, but no activations.
    step_peak = grads + opt_transient
    transient = max(0, step_peak - forward_peak)
    components = {
        "weights": int(weights),
        "lora": int(lora_w),
        "gradients": int(grads_in_forward),
        "optimizer": int(optimizer),
        "activations": int(activations),
        "vision_activations": int(vision_stored),
        "logits": int(logits),
        "vision_forward": int(vision_forward),
        # what the optimizer step or the vision forward add beyond the forward/backward peak
        "transient": int(transient),
    }
    peak = sum(components.values())
    required = int(peak * (1 + FRAGMENTATION) + CUDA_CONTEXT_BYTES)
    if s.precision == "fp16" and not s.lora:
        notes.append("full fine-tuning in fp16 is unstable without fp32 master weights; prefer bf16")
    return MemoryEstimate(components, peak, required, s.seq_len, trainable, notes)


def with_changes(s: TrainSettings, **changes: Any) -> TrainSettings:
    return replace(s, **changes)
