"""Outgrowing one process and surviving faults, for real on CPU: two processes and two "machines" (over
loopback) under accelerate, a rank dying, OOM back-off under a real memory limit, kill -9 then resume
against an uninterrupted run, SIGTERM, a full disk while saving, and checkpoints cut short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainer_core.run.backoff import BatchShape, next_smaller

COMMON = ["--set", "samples.every_steps=0", "--set", "samples.prompts=[]", "--set", "data.eval_fraction=0"]


def vlmtune(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=timeout)


def rows(run: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def wait_for_step(run_root: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        for m in run_root.glob("*/metrics.jsonl"):
            lines = m.read_text().splitlines()
            if lines and len([x for x in lines if '"train"' in x]) >= step:
                return m.parent
        time.sleep(0.1)
    raise AssertionError(f"no step {step} within {timeout}s")


# -- pure rules

def test_back_off_halves_micro_and_keeps_the_effective_batch():
    shape = BatchShape(8, 2, False)
    seen = []
    while shape is not None:
        seen.append(shape)
        shape = next_smaller(shape)
    assert [(s.micro_batch_size, s.gradient_accumulation_steps, s.gradient_checkpointing) for s in seen] == [
        (8, 2, False), (4, 4, False), (2, 8, False), (1, 16, False), (1, 16, True)]
    assert next_smaller(BatchShape(3, 1, True)) == BatchShape(1, 3, True)  # never a smaller effective batch


# -- several processes

@pytest.mark.slow
def test_two_processes_one_run_folder(demo, tmp_path):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--num-processes", "2", *COMMON,
                  "--set", f"output_dir={tmp_path}", "--set", "training.max_steps=12", "--set", "training.save_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = summary(run)
    assert s["status"] == "completed" and s["world_size"] == 2 and s["steps"] == 12
    steps = [r["step"] for r in rows(run)]
    assert steps == list(range(1, 13))  # one metrics file, written once per step (rank 0 only)
    losses = [r["loss"] for r in rows(run)]
    assert losses[-1] < losses[0] * 0.8
    cfg = (run / "accelerate.yaml").read_text()
    assert "num_processes: 2" in cfg and "distributed_type: MULTI_GPU" in cfg
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["event"] == "run_started")
    assert started["summary"]["effective_batch"] == 4 * 1 * 2
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(run / "adapter")).r == 16


@pytest.mark.slow
def test_two_machines_over_loopback(demo, tmp_path):
    run = tmp_path / "shared-run"
    base = [sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"), "--headless",
            "--num-processes", "2", "--num-machines", "2", "--main-process-ip", "127.0.0.1",
            "--main-process-port", "29517", "--run-dir", str(run), *COMMON, "--set", "training.max_steps=6",
            "--set", "training.save_steps=3", "--set", f"output_dir={tmp_path}"]
    node1 = subprocess.Popen([*base, "--machine-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node0 = subprocess.run([*base, "--machine-rank", "0"], capture_output=True, text=True, timeout=300)
    out1, err1 = node1.communicate(timeout=120)
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, err1[-3000:]
    s = summary(run)
    assert s["status"] == "completed" and s["world_size"] == 2
    assert [r["step"] for r in rows(run)] == list(range(1, 7))
    assert (run / "node-1" / "accelerate.yaml").is_file()  # machine 1 keeps its launch files apart


def test_several_machines_need_a_shared_run_dir(demo):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--num-processes", "2",
                  "--num-machines", "2", "--main-process-ip", "127.0.0.1")
    assert out.returncode == 2 and "give the same --run-dir PATH on each" in out.stderr


def test_several_machines_need_the_main_address(demo):
    out = vlmtune("check", str(demo.presets / "demo-sft.yaml"), "--set", "distributed.num_machines=2",
                  "--set", "distributed.num_processes=2")
    assert out.returncode == 2 and "distributed.main_process_ip" in out.stderr and "is required" in out.stderr


def long_two_process_run(demo, tmp_path):
    """A two-process demo run that would train for hours, at its second step: (launcher, run folder, rank by RANK)."""
    import psutil

    cmd = [sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"), "--headless",
           "--num-processes", "2", *COMMON, "--set", f"output_dir={tmp_path}", "--set", "training.max_steps=100000",
           "--set", "training.save_steps=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for_step(tmp_path, 2, proc)
    # The ranks: worker processes with a RANK (the elastic agent also names the worker module but has none).
    ranks = {c.environ().get("RANK"): c for c in psutil.Process(proc.pid).children(recursive=True)
             if "trainer_core.run.worker" in " ".join(c.cmdline()) and c.environ().get("RANK") is not None}
    return proc, run, ranks


@pytest.mark.slow
def test_a_rank_that_dies_fails_the_run(demo, tmp_path):
    proc, run, ranks = long_two_process_run(demo, tmp_path)
    ranks["1"].kill()  # the kernel's OOM killer, say
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1
    s = summary(run)
    assert s["status"] == "failed" and "a process ended without a report" in s["error"]
    assert "error:" in err


@pytest.mark.slow
def test_ranks_stop_cleanly_when_the_launching_vlmtune_is_killed(demo, tmp_path):
    import psutil

    proc, run, ranks = long_two_process_run(demo, tmp_path)
    workers = list(ranks.values())
    assert len(workers) == 2
    proc.kill()  # kill -9 of vlmtune itself: no chance to forward a stop
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=120)
    assert not alive, "ranks kept training after the launching vlmtune was killed"
    s = summary(run)
    assert s["status"] == "stopped" and s["steps"] < 100000 and (run / "adapter").is_dir(), s


# -- OOM back-off under a real memory limit

OOM_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from transformers import TrainerCallback
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training

    def vm():
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))

    class ShrinkMemory(TrainerCallback):
        # After step 2 the process may grow by only 20 MiB more: a micro-batch of 32 no longer fits (its
        # activations alone are ~100 MiB), as when another job takes the GPU's memory mid-run.
        done = False
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2 and not ShrinkMemory.done:
                ShrinkMemory.done = True
                resource.setrlimit(resource.RLIMIT_AS, (vm() + 20 * 2**20, resource.RLIM_INFINITY))

    preset = load_preset(sys.argv[1], sys.argv[2:])
    result = run_training(preset, callbacks=[ShrinkMemory()])
    print("RUN", json.dumps({"status": result.status, "error": result.error, "run_dir": str(result.run_dir)}))
""")


@pytest.mark.slow
def test_oom_backs_off_keeping_the_effective_batch(demo, tmp_path):
    script = tmp_path / "oom.py"
    script.write_text(OOM_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(demo.presets / "demo-sft.yaml"),
                          f"output_dir={tmp_path / 'runs'}", "training.micro_batch_size=32",
                          "training.gradient_accumulation_steps=1", "training.max_steps=6", "training.max_length=512",
                          "training.save_steps=100", "samples.every_steps=0", "samples.prompts=[]",
                          "data.eval_fraction=0"], capture_output=True, text=True, timeout=300)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RUN ")), None)
    assert line, out.stderr[-3000:]
    result = json.loads(line[4:])
    assert result["status"] == "completed", result["error"]
    run = Path(result["run_dir"])
    s = summary(run)
    backoffs = s["oom_backoffs"]
    assert backoffs and backoffs[0]["step"] == 2 and backoffs[0]["during"] == "training"
    assert "can't allocate memory" in backoffs[0]["error"] and backoffs[0]["memory_at_failure"] > 0
    for b in backoffs:
        assert b["to"]["micro_batch_size"] < b["from"]["micro_batch_size"]
        assert (b["to"]["micro_batch_size"] * b["to"]["gradient_accumulation_steps"]
                == b["from"]["micro_batch_size"] * b["from"]["gradient_accumulation_steps"] == 32)
    # went on from the last completed step: every step once, in order, and the events name the back-off
    assert [r["step"] for r in rows(run)] == list(range(1, 7))
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "oom_backoff" and e["before"]["micro_batch_size"] == 32 for e in events)
    # each back-off after step 0 resumed from a checkpoint of its step (rotation may since have removed it)
    assert all(b["step"] >= 2 for b in backoffs) and not (run / "checkpoints" / ".staging").exists()


# -- crash-safe resume

@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(demo, tmp_path):
    args = [*COMMON, "--set", "training.max_steps=16", "--set", "training.save_steps=4",
            "--set", "lora.dropout=0.1", "--set", "training.lr_scheduler=cosine"]
    straight = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", *args,
                       "--set", f"output_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]
    (ref,) = (tmp_path / "straight").iterdir()

    crash_root = tmp_path / "crash"
    slow = [*args, "--set", f"output_dir={crash_root}"]
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"),
                             "--headless", *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for_step(crash_root, 10, proc)
    proc.send_signal(signal.SIGKILL)  # no handler runs: a power cut, as far as the run folder knows
    proc.communicate()
    assert summary(run)["status"] == "running"
    # a checkpoint being written when the power went: a staging folder, never a checkpoint-N
    # (the kill may have caught a real one being written: same thing)
    (run / "checkpoints" / ".staging" / "checkpoint-12").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / ".staging" / "checkpoint-12" / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--resume", *slow)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {run}" in out.stderr  # --resume alone: the newest run of this preset
    s = summary(run)
    assert s["status"] == "completed" and s["steps"] == 16 and s["resumed_from"]["step"] in (8, 12)
    assert not (run / "checkpoints" / ".staging").exists()
    got, want = rows(run), rows(ref)
    assert [r["step"] for r in got] == list(range(1, 17))  # no step recorded twice
    for a, b in zip(got, want, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3, abs=1e-3), (a["step"], a["loss"], b["loss"])
        assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-6)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_0(demo, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", str(demo.presets / "demo-sft.yaml"),
                             "--headless", *COMMON, "--set", f"output_dir={tmp_path}",
                             "--set", "training.max_steps=100000", "--set", "training.save_steps=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = wait_for_step(tmp_path, 3, proc)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends before preemption
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    s = summary(run)
    assert s["status"] == "stopped"
    assert (run / "checkpoints" / f"checkpoint-{s['steps']}" / "trainer_state.json").is_file()


def test_resume_alone_without_any_run_says_so(demo, tmp_path):
    out = vlmtune("train", str(demo.presets / "demo-sft.yaml"), "--headless", "--resume",
                  "--set", f"output_dir={tmp_path}")
    assert out.returncode == 2 and "no run of 'demo-sft' with a checkpoint" in out.stderr


DISK_SCRIPT = textwrap.dedent("""
    import json, resource, signal, sys
    from transformers import TrainerCallback
    from trainer_core.config.presets import load_preset
    from trainer_core.run.engine import run_training

    class DiskFills(TrainerCallback):
        # After the first checkpoint no file may grow past 4 KiB: the next save fails as on a full disk.
        def on_save(self, args, state, control, **kw):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    result = run_training(load_preset(sys.argv[1], sys.argv[2:]), callbacks=[DiskFills()])
    print("RUN", json.dumps({"status": result.status, "error": result.error, "run_dir": str(result.run_dir)}))
""")


@pytest.mark.slow
def test_full_disk_while_saving_keeps_the_previous_checkpoint(demo, tmp_path):
    script = tmp_path / "disk.py"
    script.write_text(DISK_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(demo.presets / "demo-sft.yaml"),
                          f"output_dir={tmp_path / 'runs'}", "training.max_steps=8", "training.save_steps=3",
                          "samples.every_steps=0", "samples.prompts=[]", "data.eval_fraction=0"],
                         capture_output=True, text=True, timeout=300)
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RUN "))[4:])
    assert result["status"] == "failed"
    assert "could not save the checkpoint of step 6" in result["error"]
    assert "the previous checkpoint checkpoint-3 is intact" in result["error"]
    assert "save_total_limit" in result["error"]
    ckpts = Path(result["run_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-3"]
    assert (ckpts / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (ckpts / ".staging" / "checkpoint-6").exists()


def test_export_config_writes_what_a_cluster_needs(demo, tmp_path):
    out = vlmtune("export-config", str(demo.presets / "demo-sft.yaml"), "--out", str(tmp_path / "x"),
                  "--num-processes", "4", "--num-machines", "2", "--main-process-ip", "10.1.2.3",
                  "--run-dir", "/shared/runs/demo")
    assert out.returncode == 0, out.stderr[-2000:]
    x = tmp_path / "x"
    import yaml

    accel = yaml.safe_load((x / "accelerate.yaml").read_text())
    assert accel["num_processes"] == 4 and accel["num_machines"] == 2 and accel["main_process_ip"] == "10.1.2.3"
    assert yaml.safe_load((x / "trl-sft.yaml").read_text())["per_device_train_batch_size"] == 4
    launch = (x / "launch.sh").read_text()
    for rank in (0, 1):
        assert f"--machine-rank {rank} --main-process-ip 10.1.2.3" in launch
    assert launch.count("--run-dir /shared/runs/demo") == 2 and "trl sft --config" in launch
    assert "--machine-rank 1" in out.stdout


def test_accelerate_config_per_strategy():
    from trainer_core.config.presets import DistributedSection
    from trainer_core.run.distributed import accelerate_config

    assert accelerate_config(DistributedSection(num_processes=8, strategy="fsdp"))["distributed_type"] == "FSDP"
    zero3 = accelerate_config(DistributedSection(num_processes=8, strategy="deepspeed-zero3"), precision="bf16")
    assert zero3["deepspeed_config"]["zero_stage"] == 3 and zero3["mixed_precision"] == "bf16"
    assert "main_process_ip" not in accelerate_config(DistributedSection(num_processes=2))


def test_staged_checkpoint_is_never_resumed(tmp_path):
    from trainer_core.run.folder import latest_checkpoint, newest_run

    ck = tmp_path / "demo-20261123-010203" / "checkpoints"
    (ck / "checkpoint-4").mkdir(parents=True)
    (ck / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (ck / ".staging" / "checkpoint-8").mkdir(parents=True)
    (ck / ".staging" / "checkpoint-8" / "trainer_state.json").write_text("{}")
    (ck.parent / "preset.yaml").write_text("name: demo\n")
    assert latest_checkpoint(ck.parent).name == "checkpoint-4"
    newer = tmp_path / "demo-20261123-020000"
    newer.mkdir()
    (newer / "preset.yaml").write_text("name: demo\n")  # newer, but nothing to resume
    assert newest_run(tmp_path, "demo") == ck.parent
    assert newest_run(tmp_path, "demo", with_checkpoint=False) == newer
    assert os.path.basename(str(newest_run(tmp_path, "other") or "")) == ""
