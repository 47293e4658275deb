"""Start a headless run as a detached process: it survives the terminal (and the SSH session) closing,
and anything can watch it through its run directory (`vlmtune monitor RUN_DIR`)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from trainer_core.base.processes import record_process
from trainer_core.run.distributed import safe_env, safe_python
from trainer_core.run.folder import new_run_dir


def start_detached(preset_path: str | Path, output_dir: str | Path, name: str, *,
                   trust_remote_code: bool = False) -> tuple[Path, int]:
    """(run directory, pid). The process runs `vlmtune train PRESET --headless` in its own session, with its
    console output in RUN_DIR/console.log. `trust_remote_code`: the user confirmed it (passed on as the flag)."""
    run_dir = new_run_dir(output_dir, name)
    log = (run_dir / "console.log").open("ab")
    proc = subprocess.Popen(
        [*safe_python(), "-m", "tui.cli", "train", str(preset_path), "--headless", "--run-dir", str(run_dir),
         *(["--trust-remote-code"] if trust_remote_code else [])],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=safe_env(),
        start_new_session=True,  # no SIGHUP when the terminal goes away; Ctrl-C here does not reach it
        close_fds=True,
    )
    log.close()
    record_process(run_dir, proc.pid)  # a child that dies before writing anything is still seen to have died
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it ends: no zombie left behind
    return run_dir, proc.pid
