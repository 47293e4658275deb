"""Every documented command is a test: each `vlmtune` line of the README's sh blocks runs against the demo, in
a folder laid out as the README's reader has it (the repo's presets/, the demo built by `vlmtune demo`).

Placeholders are filled from what the commands before made (`<stamp>` from the newest demo run; `data.jsonl`
and `pairs.csv` written here). Lines that need the hub, or GPUs, must fail with their clear message on this
offline CPU machine; lines shown as the output of the command before them (`# machine N:`) must be exactly
what it prints. Any other line must exit 0, and no line may print a traceback.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# The first words of lines that cannot succeed here, and a word their message must hold.
NEEDS_NETWORK = {"vlmtune data check HuggingFaceM4/ChartQA": "hub",
                 "vlmtune export-config presets/smolvlm-chartqa-qlora.yaml": "hub"}
NEEDS_GPUS = ("--num-processes 8",)


@dataclass(frozen=True)
class Line:
    text: str
    printed_by_previous: bool  # shown as the output of the command before it (after a `# machine N:` note)


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def vlmtune_lines(text: str) -> list[Line]:
    out = []
    for block in sh_blocks(text):
        note = ""
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.strip()
            if line.startswith("#"):
                note = line
            elif line.startswith("vlmtune "):
                out.append(Line(shlex.join(shlex.split(line, comments=True)), note.startswith("# machine")))
                note = ""
    return out


LINES = vlmtune_lines(README)


def test_the_readme_has_the_commands_it_promises():
    assert len(LINES) >= 15
    assert any(line.text.startswith("vlmtune demo --headless") for line in LINES)


def test_quick_start_is_two_set_up_commands_and_the_second_is_what_ci_runs():
    quick = sh_blocks(README.split("## Quick start", 1)[1])[0].strip().splitlines()
    assert len(quick) == 2 and all("pip install torch==2.13.0" in q for q in quick)
    assert quick[0].endswith("vlmtune demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert quick[1] in ci  # the README's test command is CI's, character for character


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """A folder as the README's reader has it: the repo's presets/ and the demo built by the README's command."""
    cwd = tmp_path_factory.mktemp("reader")
    shutil.copytree(ROOT / "presets", cwd / "presets")
    state = {"cwd": cwd}
    built = vlmtune(cwd, ["demo", "--no-app"])
    assert built.returncode == 0, built.stderr
    demo = cwd / "vlmtune-demo"
    shutil.copy(demo / "data" / "chart_sft.jsonl", cwd / "data.jsonl")
    shutil.copytree(demo / "data" / "images", cwd / "images")
    with (cwd / "pairs.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "good", "bad"])
        w.writerows([["What is 2+2?", "4", "5"], ["Capital of France?", "Paris", "Lyon"]])
    return state


def vlmtune(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)


def fill(text: str, cwd: Path) -> str:
    text = text.replace(" PRESET ", " vlmtune-demo/presets/demo-sft.yaml ")
    if "<stamp>" in text:
        runs = sorted((cwd / "vlmtune-demo" / "runs").glob("demo-sft-*"))
        assert runs, "a line names a demo run before any was made"
        text = re.sub(r"demo-sft-<stamp>", runs[-1].name, text)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("line", LINES, ids=[line.text[:70] for line in LINES])
def test_readme_line(line: Line, reader):
    cwd = reader["cwd"]
    if line.printed_by_previous:
        check_printed(line, cwd)
        return
    args = shlex.split(fill(line.text, cwd))[1:]
    result = vlmtune(cwd, args)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    network = next((word for start, word in NEEDS_NETWORK.items() if line.text.startswith(start)), None)
    if network:
        assert result.returncode != 0 and network in output, output[-2000:]  # the reason, said (or in the JSON)
    elif any(flag in line.text for flag in NEEDS_GPUS) and not _has_gpus(8):
        assert result.returncode == 2 and "GPU" in result.stderr, output[-2000:]
    else:
        assert result.returncode == 0, output[-3000:]
        check_effect(args, result, cwd)


def check_effect(args: list[str], result: subprocess.CompletedProcess, cwd: Path) -> None:
    """What each kind of line promises, beyond exit 0."""
    if args[:2] == ["plan", "--model"] and "--json" in args:
        assert json.loads(result.stdout)["params"]["total"] > 0
        assert (cwd / args[args.index("--write") + 1]).is_file()
    if args[0] == "export":
        assert (cwd / args[args.index("--out") + 1] / "config.json").is_file()
    if args[0] == "chat":
        assert result.stdout.strip()  # an answer (the demo model's own words)
    if args[0] == "train" and "--resume" not in args:
        summary = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
        assert summary["status"] == "completed"


def check_printed(line: Line, cwd: Path) -> None:
    """The `# machine N:` lines are what export-config prints for its flags (checked without the network)."""
    from trainer_core.config.presets import DistributedSection
    from trainer_core.run.distributed import node_command_lines

    args = shlex.split(line.text)
    value = {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--") and i + 1 < len(args)}
    d = DistributedSection(num_processes=int(value["--num-processes"]), num_machines=int(value["--num-machines"]),
                           machine_rank=0, main_process_ip=value["--main-process-ip"],
                           main_process_port=int(value["--main-process-port"]))
    assert line.text in node_command_lines(args[2], d, value["--run-dir"])


def _has_gpus(n: int) -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() >= n
