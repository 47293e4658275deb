"""Several processes, GPUs and machines, on accelerate: the accelerate config vlmtune writes into the run
folder, the `accelerate launch` command lines for each machine, and the supervision of a launch (its
processes are accelerate's; vlmtune only starts the launcher, forwards a stop, and records the outcome).

Every process runs `trainer_core.run.worker`, which calls the same `run_training` as a single-process run; only
global rank 0 writes the run folder, and a failing rank leaves its error in `errors/rank-N.txt`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainer_core.config.presets import DistributedSection, Preset

ACCELERATE_FILE = "accelerate.yaml"
ERRORS_DIR = "errors"


def is_distributed(d: DistributedSection) -> bool:
    return d.num_processes > 1 or d.num_machines > 1


def _mixed_precision(precision: str) -> str:
    # The Trainer sets bf16/fp16 itself from our arguments; the launcher's setting only has to agree with it.
    return {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")


def accelerate_config(d: DistributedSection, *, precision: str = "fp32") -> dict[str, Any]:
    """The accelerate config file's content for this layout (the keys `accelerate config` writes)."""
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": "MULTI_GPU",  # also right on CPU: torchrun starts the processes, gloo connects them
        "num_processes": d.num_processes,
        "num_machines": d.num_machines,
        "machine_rank": d.machine_rank,
        "main_training_function": "main",
        "mixed_precision": _mixed_precision(precision),
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "gpu_ids": "all",
        "downcast_bf16": "no",
    }
    if d.num_machines > 1:
        cfg["main_process_ip"] = d.main_process_ip
        cfg["main_process_port"] = d.main_process_port
    if d.strategy == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,
            # Full state dicts keep checkpoints and the adapter loadable without FSDP.
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_activation_checkpointing": False,
        }
    elif d.strategy.startswith("deepspeed"):
        stage = 3 if d.strategy.endswith("zero3") else 2
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "deepspeed_multinode_launcher": "standard",
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": stage == 3,
            "zero_stage": stage,
            **({"zero3_save_16bit_model": True} if stage == 3 else {}),
        }
    return cfg


def write_accelerate_config(folder: Path, d: DistributedSection, *, precision: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ACCELERATE_FILE
    path.write_text(yaml.safe_dump(accelerate_config(d, precision=precision), sort_keys=False))
    return path


def safe_python(python: str | None = None) -> list[str]:
    """The interpreter without the working directory on sys.path (`-P`, Python 3.11+): a `tui/` or
    `trainer_core/` folder in the user's project must not replace vlmtune's own code in the child."""
    return [python or sys.executable, *(["-P"] if sys.version_info >= (3, 11) else [])]


def safe_env(**extra: str) -> dict[str, str]:
    """This environment for a child process, with PYTHONSAFEPATH=1: the flag reaches every Python the child
    starts in turn (accelerate's ranks run `python -m trainer_core.run.worker` from the same folder)."""
    return {**os.environ, "PYTHONSAFEPATH": "1", **extra}


def launch_command(config_file: Path, preset_file: Path, run_dir: Path, *, machine_rank: int | None = None,
                   resume: bool = False, python: str | None = None) -> list[str]:
    """`accelerate launch` (as `python -m`, so that it is this environment's) running the worker on each rank."""
    cmd = [*safe_python(python), "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    if machine_rank is not None:
        cmd += ["--machine_rank", str(machine_rank)]
    cmd += ["-m", "trainer_core.run.worker", str(preset_file), "--run-dir", str(run_dir)]
    if resume:
        cmd.append("--resume")
    return cmd


def node_command_lines(preset_file: str, d: DistributedSection, run_dir: str) -> list[str]:
    """What to type on each machine: the same `vlmtune train`, differing only in --machine-rank."""
    lines = []
    for rank in range(d.num_machines):
        args = ["vlmtune", "train", preset_file, "--headless", "--num-processes", str(d.num_processes)]
        if d.num_machines > 1:
            args += ["--num-machines", str(d.num_machines), "--machine-rank", str(rank),
                     "--main-process-ip", str(d.main_process_ip), "--main-process-port", str(d.main_process_port)]
        if d.strategy != "ddp":
            args += ["--strategy", d.strategy]
        args += ["--run-dir", run_dir]
        lines.append(shlex.join(args))
    return lines


_PEER_LOST = ("closed by peer", "connection reset", "remote worker", "broken pipe", "ncclremoteerror",
              "socket timeout", "connection refused")


def _lost_a_peer(error: str) -> bool:
    return any(k in error.lower() for k in _PEER_LOST)


def rank_errors(run_dir: Path) -> list[tuple[int, str]]:
    """(rank, error) for every rank that reported a failure, first failure first: when one rank fails, the
    others fail after it (a broken connection), and the first is the cause."""
    out = []
    for p in (run_dir / ERRORS_DIR).glob("rank-*.txt"):
        try:
            out.append((p.stat().st_mtime_ns, int(p.stem[5:]), p.read_text(encoding="utf-8").strip().splitlines()[0]))
        except (ValueError, IndexError, OSError):
            continue
    return [(rank, error) for _, rank, error in sorted(out)]


@dataclass
class Launch:
    """A running `accelerate launch`; `request` stops it the clean way (SIGTERM to every rank, which saves a
    checkpoint at the step they agree on)."""

    process: subprocess.Popen
    run_dir: Path
    reason: str = ""

    def request(self, reason: str = "stop requested") -> None:
        self.reason = reason
        # The ranks, not the launcher: a signalled launcher would kill them 30 s later, mid-checkpoint perhaps.
        workers = _children(self.process.pid)
        for pid in workers or [self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    def request_checkpoint(self) -> None:  # not across processes: the monitor says so
        raise NotImplementedError

    def wait(self) -> int:
        return self.process.wait()


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children()]
    except Exception:  # gone already
        return []


def start(preset: Preset, preset_file: Path, run_dir: Path, *, resume: bool, precision: str,
          config_folder: Path | None = None, log_file: Path | None = None) -> Launch:
    """Write accelerate.yaml (into the run folder by default) and start `accelerate launch` on this machine."""
    config = write_accelerate_config(config_folder or run_dir, preset.distributed, precision=precision)
    cmd = launch_command(config, preset_file, run_dir, resume=resume)
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 (the child owns it for its whole life)
    # Each rank watches this process: if `vlmtune` is killed, the ranks stop cleanly instead of training on alone.
    env = safe_env(PYTHONUNBUFFERED="1", VLMTUNE_PARENT_PID=str(os.getpid()))
    # Its own session: a Ctrl-C in this terminal reaches vlmtune, which stops the ranks cleanly, rather than
    # every process at once.
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                            start_new_session=True)
    if out:
        out.close()
    return Launch(proc, run_dir)


def finish_summary(run_dir: Path, returncode: int) -> dict[str, Any]:
    """After the launcher exits: the run's summary, made to say `failed` with the failing rank's error when a
    rank died without rank 0 recording it (a rank's own failure, or a kill)."""
    from trainer_core.run.folder import RunPaths, read_summary, write_summary

    summary = read_summary(run_dir) or {"status": "failed", "name": run_dir.name}
    if summary.get("status") in ("completed", "stopped") and returncode == 0:
        return summary
    errors = rank_errors(run_dir)
    if errors and len(errors) == 1 and _lost_a_peer(errors[0][1]):
        # The rank that reported only lost its connection: the cause is a process that died without a word.
        summary.update(status="failed", error_rank=None, error=(
            "a process ended without a report (killed, e.g. by the system running out of memory, or its machine "
            f"went down); rank {errors[0][0]} then lost its connection: {errors[0][1][:200]}"))
    elif errors:
        rank, error = errors[0]
        summary.update(status="failed", error=error if rank == 0 else f"rank {rank}: {error}", error_rank=rank)
    elif summary.get("status") != "failed":
        summary.update(status="failed", error=f"a process ended without a report (launcher exit code {returncode})"
                                              f"; its output is in {run_dir / 'console.log'} or the terminal")
    summary.setdefault("finished", time.time())
    write_summary(RunPaths(run_dir), summary)
    return summary
