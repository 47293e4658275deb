"""trainer_core.base.threads: torch work in a passing thread leaves no OpenMP pool behind in the calling process."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from trainer_core.base.threads import in_passing_thread


def test_returns_the_result_from_another_thread():
    assert in_passing_thread(lambda a, b=0: (a + b, threading.current_thread() is threading.main_thread()),
                             2, b=3) == (5, False)


def test_reraises_the_error_with_its_type_and_message():
    def broken(path: str) -> None:
        raise FileNotFoundError(f"no such model: {path}")

    with pytest.raises(FileNotFoundError, match="no such model: /nowhere"):
        in_passing_thread(broken, "/nowhere")


# In a fresh process, so this test's own main thread gets no pool: it counts the process's OS threads after a
# parallel torch op run in the main thread, and after the same op run in a passing thread.
_COUNT_THREADS = """
import os, sys, time, torch
from trainer_core.base.threads import in_passing_thread
if torch.get_num_threads() < 2:
    print("SKIP"); sys.exit()
op = lambda: torch.randn(1 << 22).add_(1)   # large enough for ATen to split it over the OpenMP threads
count = lambda: len(os.listdir("/proc/self/task"))
before = count()
(in_passing_thread(op) if sys.argv[1] == "passing" else op())
deadline = time.monotonic() + 5  # threads told to exit take a moment to be gone from /proc
while count() > before and time.monotonic() < deadline:
    time.sleep(0.05)
print(count() - before)
"""


def _extra_threads(where: str) -> str:
    out = subprocess.run([sys.executable, "-c", _COUNT_THREADS, where], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_openmp_pool_dies_with_the_passing_thread():
    in_main = _extra_threads("main")
    if in_main == "SKIP":
        pytest.skip("torch runs one thread here: no OpenMP pool to leave behind")
    assert int(in_main) > 0, "the op should start OpenMP workers that live as long as the main thread"
    assert _extra_threads("passing") == "0"
