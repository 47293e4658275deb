"""`vlmtune export-config` never overwrites a user's folder, and text from the preset or the data written into
launch.sh and trl-*.yaml stays text (a line break cannot end a comment and start a command or a key)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer_core.export.trl_cli import EXPORT_MARKER

pytestmark = pytest.mark.slow


def user_project(demo, root: Path) -> Path:
    """A project folder as a user has one: their data (with images) and their own launch.sh."""
    shutil.copytree(demo.data, root / "data")
    (root / "launch.sh").write_text("#!/bin/sh\necho my own launcher\n")
    return root


# ---------------------------------------------------------------- the export folder


def test_export_into_a_users_project_is_refused_and_nothing_changes(demo, tmp_path, cli, file_tree):
    project = user_project(demo, tmp_path / "project")
    before = file_tree(project)
    out = cli("export-config", str(demo.presets / "demo-text-sft.yaml"), "--out", ".", cwd=project)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --out . already holds files vlmtune did not put there")
    assert "data/" in out.stderr and "launch.sh" in out.stderr and "--force" in out.stderr
    assert file_tree(project) == before

    # --force replaces only an export's own files: a data/ folder of the user's is never mixed or removed.
    forced = cli("export-config", str(demo.presets / "demo-text-sft.yaml"), "--out", ".", "--force", cwd=project)
    assert forced.returncode == 2, forced.stderr
    assert "data holds other files" in forced.stderr and "TRL would load them" in forced.stderr
    assert file_tree(project) == before


def test_export_into_a_new_folder_then_again_into_the_same(demo, tmp_path, cli):
    out_dir = tmp_path / "export"
    first = cli("export-config", str(demo.presets / "demo-text-sft.yaml"), "--out", str(out_dir))
    assert first.returncode == 0, first.stderr[-2000:]
    assert (out_dir / EXPORT_MARKER).is_file()
    assert {p.name for p in (out_dir / "data").iterdir()} == {"train.parquet", "test.parquet"}
    # The folder is vlmtune's now: a second export (here without an eval split) writes into it again.
    again = cli("export-config", str(demo.presets / "demo-text-sft.yaml"), "--out", str(out_dir),
                "--set", "data.eval_fraction=0")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name for p in (out_dir / "data").iterdir()} == {"train.parquet"}
    assert "dataset_test_split" not in yaml.safe_load((out_dir / "trl-sft.yaml").read_text())


def test_force_replaces_only_the_exports_own_files(demo, tmp_path, cli):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "launch.sh").write_text("#!/bin/sh\necho my own launcher\n")
    (folder / "notes.txt").write_text("my notes\n")
    out = cli("export-config", str(demo.presets / "demo-text-sft.yaml"), "--out", str(folder), "--force")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "vlmtune export-config" in (folder / "launch.sh").read_text()
    assert (folder / "notes.txt").read_text() == "my notes\n"
    # Not marked as vlmtune's: the next export there needs --force again.
    assert not (folder / EXPORT_MARKER).exists()


# ---------------------------------------------------------------- text in the written files


def injecting_preset(demo, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The VLM demo preset with a newline-and-command in a row's image path, in output_dir and in a LoRA
    target, each naming its own file to `touch` (so a run of the script shows which one got through)."""
    pwned = {k: str(tmp_path / f"pwned-{k}") for k in ("row", "output", "target")}
    rows = [json.loads(line) for line in (demo.data / "chart_sft.jsonl").read_text().splitlines()[:12]]
    for row in rows:
        row["images"] = [str(demo.data / p) for p in row["images"]]
    rows.append({"images": [f"missing.png\ntouch {pwned['row']}"],
                 "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = yaml.safe_load((demo.presets / "demo-sft.yaml").read_text())
    raw["model"]["name_or_path"] = str(demo.model)
    raw["data"] = {"path": str(data), "skip_invalid": True}
    raw["output_dir"] = f"{tmp_path}/runs\ntouch {pwned['output']}"
    raw["lora"]["target_modules"] = [f"q_proj\ntouch {pwned['target']}"]
    raw["samples"] = {"every_steps": 0}
    preset = tmp_path / "injecting.yaml"
    preset.write_text(yaml.safe_dump(raw))
    return preset, pwned


def stub_commands(folder: Path, log: Path) -> None:
    """`vlmtune` and `trl` that only record their arguments, so that launch.sh can run for real."""
    folder.mkdir()
    for name in ("vlmtune", "trl"):
        stub = folder / name
        stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"with open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)


def test_newlines_from_the_data_and_the_preset_stay_inside_comments_and_quotes(demo, tmp_path, cli):
    preset, pwned = injecting_preset(demo, tmp_path)
    out_dir = tmp_path / "export"
    out = cli("export-config", str(preset), "--out", str(out_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    script = out_dir / "launch.sh"
    text = script.read_text()
    # The notes name the skipped row's image path and the target, flattened onto their comment line.
    assert f"missing.png\\ntouch {pwned['row']}" in text and f"q_proj\\ntouch {pwned['target']}" in text
    for key in ("row", "target"):
        assert all(line.startswith("#") for line in text.splitlines() if pwned[key] in line), text
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0

    # Run it for real (with stand-ins for vlmtune and trl): no injected command runs, and the output_dir
    # reaches vlmtune whole, newline included, as one argument.
    log = tmp_path / "argv.jsonl"
    stub_commands(tmp_path / "bin", log)
    ran = subprocess.run(["sh", str(script)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    assert not any(Path(p).exists() for p in pwned.values())
    (argv,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv[argv.index("--run-dir") + 1] == f"{tmp_path}/runs\ntouch {pwned['output']}/demo-sft-shared"

    # The TRL YAML: the same text only in comments or in safe_dump's quoted values, no key of its own.
    trl_text = (out_dir / "trl-sft.yaml").read_text()
    values = yaml.safe_load(trl_text)
    assert values["output_dir"] == f"{tmp_path}/runs\ntouch {pwned['output']}/demo-sft-trl"
    assert not any(key.startswith("touch") for key in values)
    assert all(line.startswith("#") for line in trl_text.splitlines() if pwned["row"] in line)
