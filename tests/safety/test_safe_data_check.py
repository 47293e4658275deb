"""`vlmtune data check` shows the control characters a dataset holds instead of sending them to the terminal
(an OSC sequence in a row would otherwise retitle the terminal; others can redraw or hide text)."""

from __future__ import annotations

import json
import subprocess
import sys

ESCAPE = "\x1b]0;pwned\x07"


def test_data_check_shows_escape_sequences_instead_of_sending_them(tmp_path, cli):
    rows = [{"prompt": f"title {ESCAPE} here", "completion": "line one\nline two\r overwritten"},
            {"prompt": "fine", "completion": "also\tfine"}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Bytes, as the terminal gets them (text mode would turn a \r into a newline on the way).
    raw = subprocess.run([sys.executable, "-m", "tui.cli", "data", "check", str(data), "--task", "sft"],
                         capture_output=True, timeout=300)
    assert raw.returncode == 0, raw.stderr
    assert not any(b in raw.stdout for b in (b"\x1b", b"\x07", b"\r"))
    out = raw.stdout.decode()
    assert "title \\x1b]0;pwned\\x07 here" in out
    assert "line one\n" in out and "line two\\r overwritten" in out  # newlines stay newlines
    assert "also\tfine" in out  # and tabs stay tabs
    # --json escapes them its own way; the text is kept exactly.
    as_json = cli("data", "check", str(data), "--task", "sft", "--json")
    assert "\x1b" not in as_json.stdout and ESCAPE in json.loads(as_json.stdout)["previews"][0]
