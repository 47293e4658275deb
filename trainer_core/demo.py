"""The bundled offline demo: a tiny SmolVLM-architecture model, synthetic chart Q&A, and presets.

Everything is made locally in seconds (no hub access): a BPE tokenizer trained with `tokenizers` on
the demo's own text, a random-init Idefics3ForConditionalGeneration (SmolVLM's architecture) and a
LlamaForCausalLM sharing the tokenizer, bar charts drawn with PIL, and four presets that train on
CPU in seconds with a visibly falling loss.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainer_core.base.atomic import atomic_write_text
from trainer_core.base.errors import UsageError

LETTERS = "ABCDE"
BARS = 3  # per chart: few enough that the tiny model learns which is highest on charts it never saw
NO_INFO = "The image does not provide that information."

# SmolVLM's conversation layout, with {% generation %} marks so TRL's assistant_only_loss can work.
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<end_of_utterance>"
    "{% endgeneration %}{% else %}{{ message['content'] }}<end_of_utterance>{% endif %}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>{% endgeneration %}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>{% endif %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<|pad|>",
]

IMAGE_SIZE = 32  # pixels; the vision encoder sees 2x2 patches of 16, pooled to 1 image token
PATCH_SIZE = 16
SCALE_FACTOR = 2


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    model: Path
    text_model: Path
    data: Path
    presets: Path
    runs: Path


@dataclass(frozen=True)
class Chart:
    values: dict[str, int]
    image: str  # relative to the data folder

    @property
    def highest(self) -> str:
        return max(self.values, key=self.values.get)


def _draw_chart(values: dict[str, int], path: Path, rng: random.Random) -> None:
    from PIL import Image, ImageDraw

    colours = [(220, 60, 60), (60, 140, 220), (60, 180, 90), (230, 170, 40), (150, 80, 200)]
    img = Image.new("RGB", (IMAGE_SIZE * 2, IMAGE_SIZE * 2), "white")
    draw = ImageDraw.Draw(img)
    width = img.width // len(values)
    for i, (_letter, v) in enumerate(values.items()):
        top = img.height - 4 - int(v / 9 * (img.height - 8))
        draw.rectangle([i * width + 2, top, (i + 1) * width - 3, img.height - 4], fill=colours[i % len(colours)])
    img.save(path)


def _charts(data_dir: Path, n: int, rng: random.Random) -> list[Chart]:
    img_dir = data_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    for i in range(n):
        # Three bars, always: with 3-5 the demo's random-init model could learn the answers' form but not to read
        # unseen charts from 86 rows (eval: tuned 0.2 vs base 0.0); with three it does (0.7, `vlmtune eval`).
        vals = rng.sample(range(1, 10), BARS)
        values = dict(zip(LETTERS[:BARS], vals, strict=True))
        rel = f"images/chart_{i:03d}.png"
        _draw_chart(values, data_dir / rel, rng)
        charts.append(Chart(values, rel))
    return charts


def _questions(chart: Chart, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, right answer, wrong answer) triples for one chart."""
    letter = rng.choice(list(chart.values))
    wrong_number = str(rng.choice([v for v in range(1, 10) if v != chart.values[letter]]))
    wrong_letter = rng.choice([c for c in chart.values if c != chart.highest])
    return [
        (f"What is the value of {letter}?", str(chart.values[letter]), wrong_number),
        ("Which bar is the highest?", chart.highest, wrong_letter),
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def build_data(data_dir: Path, n_charts: int = 48, seed: int = 0) -> dict[str, Path]:
    rng = random.Random(seed)
    charts = _charts(data_dir, n_charts, rng)
    sft, dpo, text_sft, text_dpo = [], [], [], []
    for chart in charts:
        for q, right, wrong in _questions(chart, rng):
            # TRL's conversational format with images: the model learns to read the chart.
            sft.append({
                "images": [chart.image],
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": right}],
            })
            rejected = NO_INFO if rng.random() < 0.5 else wrong
            dpo.append({"images": [chart.image], "prompt": q, "chosen": right, "rejected": rejected})
            # The text sets state the chart in words, so a text model can learn the same answers.
            facts = ", ".join(f"{k}={v}" for k, v in chart.values.items())
            text_q = f"Chart: {facts}. {q}"
            text_sft.append({"prompt": text_q, "completion": right})
            text_dpo.append({"prompt": text_q, "chosen": right, "rejected": rejected})
    files = {
        "sft": data_dir / "chart_sft.jsonl",
        "dpo": data_dir / "chart_dpo.jsonl",
        "text_sft": data_dir / "text_sft.jsonl",
        "text_dpo": data_dir / "text_dpo.jsonl",
    }
    for key, rows in (("sft", sft), ("dpo", dpo), ("text_sft", text_sft), ("text_dpo", text_dpo)):
        _write_jsonl(files[key], rows)
    return files


def _corpus() -> list[str]:
    words = [f"What is the value of {c}?" for c in LETTERS] + ["Which bar is the highest?", NO_INFO]
    words += [f"Chart: {c}={v}." for c in LETTERS for v in range(10)]
    words += ["User: Assistant: System: ", "The answer is"] + [str(v) for v in range(10)] + list(LETTERS)
    return words * 4


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
        chat_template=CHAT_TEMPLATE,
    )
    return fast


def build_processor(tokenizer):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_resize=True,
    )
    seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    return Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len, chat_template=CHAT_TEMPLATE)


def _text_config(tokenizer) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": False,
        # Wider than the usual 0.02 so that logits can sharpen through a final RMSNorm: with LoRA
        # on the blocks alone, a 64-wide model at 0.02 stays near-uniform and its loss barely moves.
        "initializer_range": 0.2,
    }


def build_vlm(tokenizer, processor, seed: int = 0):
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, LlamaConfig

    torch.manual_seed(seed)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        text_config=LlamaConfig(**_text_config(tokenizer)).to_dict(),
        scale_factor=SCALE_FACTOR,
        image_token_id=processor.image_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_text_lm(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**_text_config(tokenizer)))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _preset(name: str, task: str, model: str, data: str, runs: Path, samples: list[dict], **training) -> dict:
    train = {
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 3e-3,
        "max_steps": 40,
        "max_length": 128,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "logging_steps": 1,
        "save_steps": 20,
        **training,
    }
    preset = {
        "name": name,
        "task": task,
        "model": {"name_or_path": model},
        "data": {"path": data, "eval_fraction": 0.1},
        "precision": "auto",
        "quantization": "none",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "auto"},
        "training": train,
        "samples": {"every_steps": 20, "max_new_tokens": 8, "prompts": samples},
        "output_dir": str(runs),
    }
    if task == "dpo":
        preset["dpo"] = {"beta": 0.1, "loss_type": "sigmoid"}
    return preset


def build_presets(paths: DemoPaths, sample_image: str) -> dict[str, Path]:
    vlm_samples = [
        {"text": "What is the value of B?", "image": f"../data/{sample_image}"},
        {"text": "Which bar is the highest?", "image": f"../data/{sample_image}"},
    ]
    text_samples = [{"text": "Chart: A=3, B=7, C=5. Which bar is the highest?"}]
    specs = {
        "demo-sft": _preset("demo-sft", "sft", "../model", "../data/chart_sft.jsonl", paths.runs, vlm_samples),
        "demo-dpo": _preset("demo-dpo", "dpo", "../model", "../data/chart_dpo.jsonl", paths.runs, vlm_samples,
                            learning_rate=1e-3, max_steps=30, micro_batch_size=8),
        "demo-text-sft": _preset("demo-text-sft", "sft", "../text-model", "../data/text_sft.jsonl", paths.runs,
                                 text_samples),
        "demo-text-dpo": _preset("demo-text-dpo", "dpo", "../text-model", "../data/text_dpo.jsonl", paths.runs,
                                 text_samples, learning_rate=1e-3, max_steps=30, micro_batch_size=8),
    }
    out = {}
    for name, spec in specs.items():
        header = f"# vlmtune demo preset: train it with `vlmtune train {name}.yaml --headless`\n"
        out[name] = atomic_write_text(paths.presets / f"{name}.yaml", header + yaml.safe_dump(spec, sort_keys=False))
    return out


def demo_paths(root: str | Path) -> DemoPaths:
    root = Path(root).expanduser().resolve()
    return DemoPaths(root, root / "model", root / "text-model", root / "data", root / "presets", root / "runs")


def is_built(root: str | Path) -> bool:
    p = demo_paths(root)
    return all(
        (x / "config.json").exists() for x in (p.model, p.text_model)
    ) and (p.presets / "demo-sft.yaml").exists()


MARKER = ".vlmtune-demo"  # vlmtune made this folder: a rebuild may replace what is in it


class NotADemoFolder(UsageError):
    """The demo's folder holds things vlmtune did not put there."""


def is_demo(root: str | Path) -> bool:
    """A folder vlmtune built the demo in (marked; or complete, from before the marker)."""
    return (Path(root).expanduser() / MARKER).is_file() or is_built(Path(root).expanduser())


def check_demo_folder(root: str | Path) -> None:
    """Refuse a folder that is neither missing, empty nor a demo: a build writes model/, data/ and presets/, and
    save_pretrained deletes weight shards it did not write."""
    root = Path(root).expanduser()
    if not root.exists() or is_demo(root):
        return
    if not root.is_dir():
        raise NotADemoFolder(f"{root} is a file: give --out a new or empty folder for the demo")
    if any(root.iterdir()):
        listed = sorted(p.name for p in root.iterdir())
        raise NotADemoFolder(
            f"{root} is not a vlmtune demo and it holds other files ({', '.join(listed[:4])}"
            f"{', ...' if len(listed) > 4 else ''}): the demo would replace its model/, data/ and presets/, so "
            f"nothing is written there (--force rebuilds only a demo). Give --out a new or empty folder.")


def build_demo(root: str | Path = "vlmtune-demo", seed: int = 0) -> DemoPaths:
    """Write the tiny models, data and presets under `root`: a new or empty folder, or a demo (rebuilt whole)."""
    check_demo_folder(root)
    paths = demo_paths(root)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.root / MARKER, "vlmtune demo\n")  # first: a build cut short can be rebuilt
    for d in (paths.model, paths.text_model, paths.data, paths.presets):
        d.mkdir(parents=True, exist_ok=True)
    build_data(paths.data, seed=seed)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    vlm = build_vlm(tokenizer, processor, seed=seed)
    vlm.save_pretrained(paths.model)
    processor.save_pretrained(paths.model)
    lm = build_text_lm(tokenizer, seed=seed)
    lm.save_pretrained(paths.text_model)
    tokenizer.save_pretrained(paths.text_model)
    build_presets(paths, "images/chart_000.png")
    return paths
