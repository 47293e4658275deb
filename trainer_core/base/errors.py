"""The one base class for errors a user can cause and fix. Each kind says its exit code; the CLI, the engine
and the app print `str(exc)` as one paragraph (no traceback) for any of them, and a traceback only with --debug.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class VlmtuneError(Exception):
    """Something the user can fix (a bad preset, bad data, a model that cannot load, a full disk, ...)."""

    exit_code = EXIT_FAILED


class UsageError(VlmtuneError):
    """A command was given something it cannot take (a missing file, a bad flag value)."""

    exit_code = EXIT_USAGE
