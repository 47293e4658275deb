"""GPU check of `vlmtune plan --probe-run`: a random-init SmolVLM-256M-shaped model, real image data,
planned for a simulated 8 GiB GPU, then confirmed by 3 real steps (stepping down if the peak is too big).

    python bench/gpu_probe_run.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import memory_accuracy as ma  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vlmtune-probe-run-"))
    model = ma.build_model_dir("HuggingFaceTB/SmolVLM-256M-Instruct", work / "model", "cuda")
    case = dict(task="sft", text=256, image=512)
    data = ma.make_data(case, work)
    preset = work / "preset.yaml"
    preset.write_text(yaml.safe_dump({"name": "probe", "task": "sft", "model": {"name_or_path": str(model)},
                                      "data": {"path": str(data)}, "output_dir": str(work / "runs")}))
    for gpu_mib in ("8192", "4096"):
        cmd = [sys.executable, "-m", "tui.cli", "plan", str(preset), "--gpu-mib", gpu_mib, "--probe-run",
               "--write", str(work / f"planned-{gpu_mib}.yaml")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        print(f"--- plan for {gpu_mib} MiB (exit {out.returncode})")
        print(out.stdout[-3000:])
        if out.returncode not in (0, 1):
            print(out.stderr[-2000:])
        written = work / f"planned-{gpu_mib}.yaml"
        if written.exists():
            print(yaml.safe_load(written.read_text())["training"])


if __name__ == "__main__":
    main()
