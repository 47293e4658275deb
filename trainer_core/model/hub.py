"""Is the Hugging Face hub reachable? Asked once, quickly, so an offline machine fails in a second
with a clear message instead of minutes of library retries."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline_forced() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if offline_forced():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
