"""The machine probe: GPUs, CPU, RAM and free disk, read once before a run and shown to the user.

`probe` never raises: each section that cannot be read degrades to None or empty and adds a plain note.
GPUs come from NVML (the driver's own library, cheap and with driver version and processes); torch.cuda
is only a fallback, imported lazily, because importing torch costs seconds on machines without GPUs.
This module never imports torch or transformers at import time, and never imports Textual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypedDict, TypeVar

GIB = 1024**3
NO_GPU_NOTE = "No GPU found: training runs on the CPU (slow; fine for the tiny demo)."
# NVML failures that just mean "no NVIDIA driver here": not worth a note when no GPU turns up either.
_QUIET_NVML_ERRORS = frozenset({"NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"})
# NVML's NVML_VALUE_NOT_AVAILABLE for process memory (unsigned -1), e.g. under Windows WDDM.
_NOT_AVAILABLE = 2**63

Backend = Literal["cuda", "mps", "cpu"]
T = TypeVar("T")


class ProcessInfo(TypedDict):
    pid: int
    name: str | None
    used_bytes: int | None


class CpuInfo(TypedDict):
    cores_physical: int | None
    cores_logical: int | None
    model: str | None


class RamInfo(TypedDict):
    total_bytes: int | None
    available_bytes: int | None


class DiskInfo(TypedDict):
    path: str | None
    free_bytes: int | None
    total_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    index: int  # as torch numbers it (after CUDA_VISIBLE_DEVICES)
    name: str
    total_bytes: int | None
    free_bytes: int | None
    used_bytes: int | None
    compute_capability: tuple[int, int] | None
    bf16: bool
    driver: str | None
    processes: list[ProcessInfo] = field(default_factory=list)
    source: Literal["nvml", "torch"] = "nvml"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # JSON has no tuples: make the dict equal to its own json round trip.
        data["compute_capability"] = list(self.compute_capability) if self.compute_capability else None
        return data


@dataclass(frozen=True)
class MachineInfo:
    backend: Backend
    gpus: list[GpuInfo]
    cpu: CpuInfo
    ram: RamInfo
    disk: DiskInfo
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "gpus": [gpu.to_dict() for gpu in self.gpus], "cpu": dict(self.cpu),
                "ram": dict(self.ram), "disk": dict(self.disk), "notes": list(self.notes)}


@dataclass
class _NvmlReading:
    """What NVML said: usable=False means it could not even count devices (so try torch.cuda)."""

    usable: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    quiet: bool = False  # the error only means "no NVIDIA driver installed"


# ---------------------------------------------------------------------------------------------- helpers


def _describe(exc: BaseException) -> str:
    """A short reason; NVMLError.__str__ itself calls into the library, so even that may fail."""
    try:
        text = str(exc).strip()
    except Exception:
        text = ""
    return text or type(exc).__name__


def _text(value: Any) -> str:
    """nvidia-ml-py returns str, older pynvml releases bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _call(fn: Callable[..., T], *args: Any) -> T | None:
    try:
        return fn(*args)
    except Exception:
        return None


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < _NOT_AVAILABLE else None


def _has_bf16(capability: tuple[int, int] | None) -> bool:
    return capability is not None and capability >= (8, 0)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f}"


# ------------------------------------------------------------------------------------------------- NVML


def _visible_indices(env: Mapping[str, str], count: int) -> tuple[list[int], str | None]:
    """NVML indices that CUDA_VISIBLE_DEVICES leaves visible, in torch's order, and a note if it applied.

    Only plain integer lists are understood; UUID/MIG forms are ignored (all devices shown). Like CUDA,
    the list stops at the first invalid entry (so "-1" hides every GPU). NVML numbers devices in PCI bus
    order; CUDA does too when CUDA_DEVICE_ORDER=PCI_BUS_ID, the usual setting on multi-GPU boxes.
    """
    raw = env.get("CUDA_VISIBLE_DEVICES")
    every = list(range(count))
    if raw is None:
        return every, None
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not all(item.lstrip("-").isdigit() for item in items):
        return every, f"CUDA_VISIBLE_DEVICES={raw!r} is not a list of indices; showing every GPU NVML sees."
    chosen: list[int] = []
    for item in items:
        index = int(item)
        if index < 0 or index >= count or index in chosen:
            break
        chosen.append(index)
    return chosen, f"CUDA_VISIBLE_DEVICES={raw!r}: showing {len(chosen)} of {count} GPUs."


def _nvml_processes(nvml: Any, handle: Any) -> list[ProcessInfo]:
    # Often unsupported (some GPUs, containers without the host PID namespace): then simply empty.
    running = _call(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
    processes: list[ProcessInfo] = []
    for proc in running:
        pid = _int_or_none(getattr(proc, "pid", None))
        if pid is None:
            continue
        name = _call(nvml.nvmlSystemGetProcessName, pid)
        processes.append({"pid": pid, "name": _text(name) if name else None,
                          "used_bytes": _int_or_none(getattr(proc, "usedGpuMemory", None))})
    return processes


def _nvml_gpu(nvml: Any, nvml_index: int, index: int, driver: str | None, notes: list[str]) -> GpuInfo | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
    except Exception as exc:
        notes.append(f"GPU {index} could not be opened through NVML ({_describe(exc)}); it is left out.")
        return None
    name = _call(nvml.nvmlDeviceGetName, handle)
    memory = _call(nvml.nvmlDeviceGetMemoryInfo, handle)
    if memory is None:
        notes.append(f"GPU {index}: NVML did not report its memory.")
    capability = _call(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    capability = (int(capability[0]), int(capability[1])) if capability else None
    return GpuInfo(
        index=index, name=_text(name) if name else f"GPU {index}",
        total_bytes=_int_or_none(getattr(memory, "total", None)),
        free_bytes=_int_or_none(getattr(memory, "free", None)),
        used_bytes=_int_or_none(getattr(memory, "used", None)),
        compute_capability=capability, bf16=_has_bf16(capability), driver=driver,
        processes=_nvml_processes(nvml, handle), source="nvml",
    )


def _read_nvml(nvml: Any, env: Mapping[str, str] | None = None) -> _NvmlReading:
    """Read every visible GPU through an NVML module (pynvml's API); never raises."""
    env = os.environ if env is None else env
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return _NvmlReading(usable=False, error=_describe(exc), quiet=type(exc).__name__ in _QUIET_NVML_ERRORS)
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            return _NvmlReading(usable=False, error=_describe(exc))
        driver = _call(nvml.nvmlSystemGetDriverVersion)
        driver = _text(driver) if driver else None
        visible, note = _visible_indices(env, count)
        reading = _NvmlReading(usable=True, notes=[note] if note else [])
        for index, nvml_index in enumerate(visible):
            gpu = _nvml_gpu(nvml, nvml_index, index, driver, reading.notes)
            if gpu is not None:
                reading.gpus.append(gpu)
        return reading
    except Exception as exc:  # belt and braces: a stand-in or odd binding returning junk
        return _NvmlReading(usable=False, error=_describe(exc))
    finally:
        _call(nvml.nvmlShutdown)


def _load_nvml() -> tuple[ModuleType | None, str | None]:
    try:
        with warnings.catch_warnings():  # the old `pynvml` package warns that it is deprecated
            warnings.simplefilter("ignore")
            import pynvml
    except Exception as exc:
        return None, f"nvidia-ml-py is not installed ({_describe(exc)})"
    return pynvml, None


# ------------------------------------------------------------------------------------------------ torch


def _torch_gpu(torch: Any, index: int) -> GpuInfo:
    props = torch.cuda.get_device_properties(index)
    capability = _call(torch.cuda.get_device_capability, index)
    capability = (int(capability[0]), int(capability[1])) if capability else None
    memory = _call(torch.cuda.mem_get_info, index)  # (free, total); creates a CUDA context on that GPU
    total = int(memory[1]) if memory else _int_or_none(getattr(props, "total_memory", None))
    free = int(memory[0]) if memory else None
    return GpuInfo(index=index, name=str(getattr(props, "name", f"GPU {index}")), total_bytes=total,
                   free_bytes=free, used_bytes=total - free if total is not None and free is not None else None,
                   compute_capability=capability, bf16=_has_bf16(capability), driver=None, source="torch")


def _read_torch(notes: list[str]) -> tuple[list[GpuInfo], bool]:
    """GPUs via torch.cuda (which applies CUDA_VISIBLE_DEVICES itself), and whether Apple MPS is usable."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        notes.append("torch is not installed, so torch.cuda could not be asked about GPUs either.")
        return [], False
    try:
        import torch

        if torch.cuda.is_available():
            gpus: list[GpuInfo] = []
            for index in range(torch.cuda.device_count()):
                try:
                    gpus.append(_torch_gpu(torch, index))
                except Exception as exc:
                    notes.append(f"GPU {index} could not be read through torch.cuda ({_describe(exc)}).")
            return gpus, False
        mps = getattr(torch.backends, "mps", None)
        return [], bool(mps is not None and mps.is_available())
    except Exception as exc:
        notes.append(f"torch could not check for GPUs ({_describe(exc)}).")
        return [], False


def _probe_gpus(notes: list[str]) -> tuple[list[GpuInfo], bool]:
    nvml, missing = _load_nvml()
    reading = _read_nvml(nvml) if nvml is not None else _NvmlReading(usable=False, error=missing)
    notes.extend(reading.notes)
    if reading.usable:  # including 0 devices: the driver is there and sees no GPU, so torch would not either
        return reading.gpus, False
    gpus, mps = _read_torch(notes)
    if gpus:
        notes.append(f"NVML not available ({reading.error}); GPU figures come from torch.cuda "
                     "(no driver version or process list).")
    elif not reading.quiet and nvml is not None:
        notes.append(f"NVML failed ({reading.error}); no GPU could be read.")
    return gpus, mps


# -------------------------------------------------------------------------------------- CPU, RAM, disk


def _cpu_model() -> str | None:
    # platform.processor() is empty or just "x86_64" on Linux, so ask the OS where it knows better.
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=2, check=False).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def _probe_cpu(notes: list[str]) -> CpuInfo:
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        pass
    logical = os.cpu_count()
    usable = _call(lambda: len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
    if usable and logical and usable < logical:  # containers and job schedulers often pin a few cores
        notes.append(f"This process may use {usable} of the {logical} logical CPU cores.")
    return {"cores_physical": physical, "cores_logical": logical, "model": _call(_cpu_model)}


def _probe_ram(notes: list[str]) -> RamInfo:
    try:
        import psutil

        memory = psutil.virtual_memory()
        return {"total_bytes": int(memory.total), "available_bytes": int(memory.available)}
    except Exception as exc:
        notes.append(f"RAM could not be read ({_describe(exc)}).")
        return {"total_bytes": None, "available_bytes": None}


def _existing_parent(path: Path) -> Path:
    """The output folder may not exist yet: measure the disk it will be created on."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or os.sep)


def _probe_disk(output_dir: str | Path, notes: list[str]) -> DiskInfo:
    try:
        where = _existing_parent(Path(os.path.abspath(Path(output_dir).expanduser())))
        usage = shutil.disk_usage(where)
        return {"path": str(where), "free_bytes": int(usage.free), "total_bytes": int(usage.total)}
    except Exception as exc:
        notes.append(f"Free disk space for {str(output_dir)!r} could not be read ({_describe(exc)}).")
        return {"path": None, "free_bytes": None, "total_bytes": None}


# ------------------------------------------------------------------------------------------ public API


def _advice(info_gpus: list[GpuInfo], backend: Backend, ram: RamInfo, disk: DiskInfo) -> list[str]:
    notes: list[str] = []
    if backend == "cpu":
        notes.append(NO_GPU_NOTE)
    elif backend == "mps":
        notes.append("Apple GPU (MPS) found: training runs on it; it shares the machine's RAM. "
                     "bf16 and 4-bit loading may be unavailable.")
    for gpu in info_gpus:
        if gpu.compute_capability is not None and not gpu.bf16:
            cc = ".".join(map(str, gpu.compute_capability))
            notes.append(f"GPU {gpu.index} ({gpu.name}, compute capability {cc}) has no bf16: use fp16 or fp32.")
        if gpu.total_bytes and gpu.free_bytes is not None and gpu.free_bytes < 0.8 * gpu.total_bytes:
            who = f" by {len(gpu.processes)} process(es)" if gpu.processes else ""
            notes.append(f"GPU {gpu.index} already has {_gib(gpu.total_bytes - gpu.free_bytes)} GiB in use{who}.")
    if ram["available_bytes"] is not None and ram["available_bytes"] < 4 * GIB:
        notes.append(f"Only {_gib(ram['available_bytes'])} GiB of RAM is available.")
    if disk["free_bytes"] is not None and disk["free_bytes"] < 10 * GIB:
        notes.append(f"Only {_gib(disk['free_bytes'])} GiB free at {disk['path']}: "
                     "checkpoints and merged models can need several GiB each.")
    return notes


def probe(output_dir: str | Path = ".") -> MachineInfo:
    """Read the machine once. Never raises; what cannot be read is None/empty with a note."""
    notes: list[str] = []
    try:
        gpus, mps = _probe_gpus(notes)
    except Exception as exc:  # the GPU probes guard themselves; this is the last line of defence
        gpus, mps = [], False
        notes.append(f"GPUs could not be probed ({_describe(exc)}).")
    backend: Backend = "cuda" if gpus else "mps" if mps else "cpu"
    cpu = _probe_cpu(notes)
    ram = _probe_ram(notes)
    disk = _probe_disk(output_dir, notes)
    with contextlib.suppress(Exception):  # advice is a nicety; never let it cost the probe
        notes.extend(_advice(gpus, backend, ram, disk))
    return MachineInfo(backend=backend, gpus=gpus, cpu=cpu, ram=ram, disk=disk, notes=notes)


def _format_gpu(gpu: GpuInfo) -> str:
    cc = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?"
    line = (f"GPU {gpu.index}: {gpu.name} - {_gib(gpu.free_bytes)} of {_gib(gpu.total_bytes)} GiB free, "
            f"bf16 {'yes' if gpu.bf16 else 'no'}, compute capability {cc}")
    return line + (f", driver {gpu.driver}" if gpu.driver else "")


def format_machine(info: MachineInfo, *, notes: bool = True) -> str:
    """A few plain-text lines (no colour codes) for the terminal, logs and tests."""
    if info.gpus:
        lines = [_format_gpu(gpu) for gpu in info.gpus]
    elif info.backend == "mps":
        lines = ["GPU: Apple MPS (shares the machine's RAM)"]
    else:
        lines = ["No GPU: training runs on the CPU (slow; fine for the tiny demo)."]
    cpu, ram, disk = info.cpu, info.ram, info.disk
    cores = f"{cpu['cores_logical'] or '?'} logical cores"
    if cpu["cores_physical"]:
        cores += f" ({cpu['cores_physical']} physical)"
    lines.append(f"CPU: {cores}" + (f", {cpu['model']}" if cpu["model"] else ""))
    lines.append(f"RAM: {_gib(ram['available_bytes'])} of {_gib(ram['total_bytes'])} GiB available")
    lines.append(f"Disk: {_gib(disk['free_bytes'])} of {_gib(disk['total_bytes'])} GiB free at {disk['path'] or '?'}")
    if notes:  # the no-GPU note would repeat the GPU line above
        lines += [f"Note: {note}" for note in info.notes if note != NO_GPU_NOTE]
    return "\n".join(lines)
