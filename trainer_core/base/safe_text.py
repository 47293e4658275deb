"""Text from data, paths or models made safe to print or to write into a comment.

A dataset row, a path or a model's answer can hold control characters: an escape sequence that rewrites
the terminal's title or screen, or a line break that ends a comment in a script or a YAML file so that the
rest becomes a command or a key. These helpers show such characters as visible escapes (`\\x1b`), so that
nothing is hidden and nothing acts.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates reorder what a terminal shows (the "Trojan Source" trick).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Line breaks beyond \n and \r: YAML and str.splitlines also end a line at these.
_LINE_BREAKS = frozenset("\x85\u2028\u2029")


def _is_unsafe(ch: str) -> bool:
    return ch in _BIDI or ch in _LINE_BREAKS or unicodedata.category(ch) in ("Cc", "Zl", "Zp")


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible_controls(text: str, keep: str = "\n\t") -> str:
    """`text` with every control character but those in `keep` shown as an escape (ESC as `\\x1b`)."""
    return "".join(_escape(ch) if ch not in keep and _is_unsafe(ch) else ch for ch in text)


def one_line(text: object) -> str:
    """`text` on one line, for a comment or a log line: line breaks and tabs are shown as escapes too."""
    return visible_controls(str(text), keep="")

