"""The machine probe: real reads on this (GPU-less) machine, and NVML parsing against a stand-in driver."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from trainer_core.plan.probe import GIB, GpuInfo, MachineInfo, _read_nvml, format_machine, probe

HEAVY = ("torch", "transformers", "textual")


class NVMLError(Exception):
    """Like pynvml.NVMLError: a plain Exception subclass."""


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's own class name
    pass


class StandInNvml:
    """A hand-written stand-in for NVIDIA's driver library (not our code): two GPUs by default."""

    def __init__(self, *, as_bytes: bool = False, fail: dict[str, Exception] | None = None, gpus=None):
        self.as_bytes = as_bytes
        self.fail = fail or {}
        self.shutdown_calls = 0
        self.gpus = gpus if gpus is not None else [
            {"name": "NVIDIA A100-SXM4-80GB", "cc": (8, 0), "total": 80 * GIB, "free": 70 * GIB,
             "procs": [(1234, 10 * GIB)]},
            {"name": "Tesla T4", "cc": (7, 5), "total": 16 * GIB, "free": 16 * GIB, "procs": []},
        ]

    def _maybe_fail(self, fn: str) -> None:
        if fn in self.fail:
            raise self.fail[fn]

    def _str(self, text: str):
        return text.encode() if self.as_bytes else text

    def nvmlInit(self):
        self._maybe_fail("nvmlInit")

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self):
        self._maybe_fail("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlSystemGetDriverVersion(self):
        self._maybe_fail("nvmlSystemGetDriverVersion")
        return self._str("550.54.15")

    def nvmlDeviceGetHandleByIndex(self, index):
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle):
        self._maybe_fail("nvmlDeviceGetName")
        return self._str(handle["name"])

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._maybe_fail("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=handle["total"], free=handle["free"], used=handle["total"] - handle["free"])

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        self._maybe_fail("nvmlDeviceGetCudaComputeCapability")
        return handle["cc"]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self._maybe_fail("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle["procs"]]

    def nvmlSystemGetProcessName(self, pid):
        self._maybe_fail("nvmlSystemGetProcessName")
        return self._str("python")


# ------------------------------------------------------------------------------------ this real machine


@pytest.fixture(scope="module")
def machine() -> MachineInfo:
    return probe(".")


def test_probe_on_this_cpu_machine(machine):
    assert machine.backend == "cpu"
    assert machine.gpus == []
    assert machine.cpu["cores_logical"] and machine.cpu["cores_logical"] > 0
    assert machine.ram["total_bytes"] > 0 and machine.ram["available_bytes"] > 0
    assert machine.disk["free_bytes"] > 0 and machine.disk["total_bytes"] >= machine.disk["free_bytes"]
    assert any("No GPU" in note for note in machine.notes)


def test_to_dict_round_trips_through_json(machine):
    data = machine.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"backend", "gpus", "cpu", "ram", "disk", "notes"}


def test_disk_probe_uses_nearest_existing_parent(tmp_path):
    info = probe(tmp_path / "runs" / "not" / "yet")
    assert info.disk["path"] == str(tmp_path)
    assert info.disk["free_bytes"] > 0


def test_format_machine_is_plain_text(machine):
    text = format_machine(machine)
    assert "No GPU" in text
    assert "CPU:" in text and "RAM:" in text and "Disk:" in text
    assert "\x1b" not in text


def test_import_does_not_pull_heavy_modules():
    code = ("import sys, trainer_core.plan.probe as h; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------- NVML, via a stand-in


@pytest.mark.parametrize("as_bytes", [False, True])
def test_read_nvml_parses_devices(as_bytes):
    nvml = StandInNvml(as_bytes=as_bytes)
    reading = _read_nvml(nvml, env={})
    assert reading.usable and nvml.shutdown_calls == 1
    a100, t4 = reading.gpus
    assert (a100.index, a100.name, a100.driver, a100.source) == (0, "NVIDIA A100-SXM4-80GB", "550.54.15", "nvml")
    assert (a100.total_bytes, a100.free_bytes, a100.used_bytes) == (80 * GIB, 70 * GIB, 10 * GIB)
    assert a100.compute_capability == (8, 0) and a100.bf16 is True
    assert a100.processes == [{"pid": 1234, "name": "python", "used_bytes": 10 * GIB}]
    assert t4.compute_capability == (7, 5) and t4.bf16 is False and t4.processes == []


def test_gpu_info_to_dict_and_format():
    gpu = _read_nvml(StandInNvml(), env={}).gpus[0]
    data = gpu.to_dict()
    assert json.loads(json.dumps(data)) == data and data["compute_capability"] == [8, 0]
    info = MachineInfo(backend="cuda", gpus=[gpu], cpu={"cores_physical": 8, "cores_logical": 16, "model": None},
                       ram={"total_bytes": 64 * GIB, "available_bytes": 60 * GIB},
                       disk={"path": "/x", "free_bytes": 100 * GIB, "total_bytes": 200 * GIB})
    text = format_machine(info)
    assert "GPU 0: NVIDIA A100-SXM4-80GB - 70.0 of 80.0 GiB free, bf16 yes, compute capability 8.0" in text
    assert "driver 550.54.15" in text and "No GPU" not in text


@pytest.mark.parametrize(("visible", "expected"), [
    ("1", ["Tesla T4"]),
    ("1,0", ["Tesla T4", "NVIDIA A100-SXM4-80GB"]),
    ("", []),
    ("-1", []),
    ("0,7,1", ["NVIDIA A100-SXM4-80GB"]),  # like CUDA: stops at the first invalid index
    ("GPU-8c1f2a3b-uuid", ["NVIDIA A100-SXM4-80GB", "Tesla T4"]),  # not indices: ignored
])
def test_read_nvml_respects_cuda_visible_devices(visible, expected):
    reading = _read_nvml(StandInNvml(), env={"CUDA_VISIBLE_DEVICES": visible})
    assert reading.usable
    assert [gpu.name for gpu in reading.gpus] == expected
    assert [gpu.index for gpu in reading.gpus] == list(range(len(expected)))  # re-indexed as torch sees them
    assert any("CUDA_VISIBLE_DEVICES" in note for note in reading.notes)


@pytest.mark.parametrize("call", ["nvmlDeviceGetComputeRunningProcesses", "nvmlSystemGetProcessName",
                                  "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetCudaComputeCapability",
                                  "nvmlDeviceGetName", "nvmlSystemGetDriverVersion"])
def test_one_failing_nvml_call_degrades_that_field(call):
    nvml = StandInNvml(fail={call: NVMLError("Not Supported")})
    reading = _read_nvml(nvml, env={})
    assert reading.usable and len(reading.gpus) == 2 and nvml.shutdown_calls == 1
    a100 = reading.gpus[0]
    expectations = {
        "nvmlDeviceGetComputeRunningProcesses": a100.processes == [],
        "nvmlSystemGetProcessName": a100.processes == [{"pid": 1234, "name": None, "used_bytes": 10 * GIB}],
        "nvmlDeviceGetMemoryInfo": a100.total_bytes is None and a100.free_bytes is None,
        "nvmlDeviceGetCudaComputeCapability": a100.compute_capability is None and a100.bf16 is False,
        "nvmlDeviceGetName": a100.name == "GPU 0",
        "nvmlSystemGetDriverVersion": a100.driver is None,
    }
    assert expectations[call]


def test_device_that_cannot_be_opened_is_left_out_with_a_note():
    reading = _read_nvml(StandInNvml(fail={"nvmlDeviceGetHandleByIndex": NVMLError("GPU is lost")}), env={})
    assert reading.usable and reading.gpus == []
    assert any("GPU is lost" in note for note in reading.notes)


def test_nvml_init_failure_is_reported_not_raised():
    nvml = StandInNvml(fail={"nvmlInit": NVMLError_LibraryNotFound("NVML Shared Library Not Found")})
    reading = _read_nvml(nvml, env={})
    assert not reading.usable and reading.quiet and reading.error == "NVML Shared Library Not Found"
    assert nvml.shutdown_calls == 0  # never initialised, so nothing to shut down


def test_nvml_count_failure_falls_back_and_still_shuts_down():
    nvml = StandInNvml(fail={"nvmlDeviceGetCount": NVMLError("Unknown Error")})
    reading = _read_nvml(nvml, env={})
    assert not reading.usable and not reading.quiet and reading.error == "Unknown Error"
    assert nvml.shutdown_calls == 1


def test_nvml_with_zero_devices_is_usable():
    reading = _read_nvml(StandInNvml(gpus=[]), env={})
    assert reading.usable and reading.gpus == []


def test_unavailable_process_memory_becomes_none():
    gpus = [{"name": "RTX 4090", "cc": (8, 9), "total": 24 * GIB, "free": 20 * GIB, "procs": [(42, 2**64 - 1)]}]
    gpu = _read_nvml(StandInNvml(gpus=gpus), env={}).gpus[0]
    assert gpu.processes == [{"pid": 42, "name": "python", "used_bytes": None}]
    assert isinstance(gpu, GpuInfo) and gpu.bf16
