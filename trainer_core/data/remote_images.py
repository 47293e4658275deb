"""Images given as http(s) URLs: each downloaded once into a cache folder, then read like a local file.

Datasets from other tools (ms-swift, LLaVA-style exports, OpenAI-format logs) often point at images by URL.
The cache is keyed by the URL's sha256, so a second run (or a row that repeats an image) reads the disk,
and a download lands under a temporary name first, so an interrupted one never leaves a half file that
later passes for the image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_ENV = "VLMTUNE_CACHE"  # the cache root (tests point it at a temp folder); images go in its images/
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # an image file past this is a wrong URL (a video, an archive)
TIMEOUT_S = 30
WORKERS = 8
PROGRESS_FROM = 20  # fewer downloads than this finish before progress would mean anything


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "vlmtune") / "images"


def cached_path(url: str) -> Path:
    suffix = Path(url.split("?", 1)[0]).suffix.lower()
    # The URL's extension is kept when it is a plain one (readers guess kinds by it); the content decides anyway.
    suffix = suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""
    return cache_dir() / (hashlib.sha256(url.encode()).hexdigest() + suffix)


class DownloadError(Exception):
    pass


def fetch(url: str, timeout: float = TIMEOUT_S) -> Path:
    """The image's local copy, downloaded on first use; DownloadError says why it could not be had."""
    url = url.strip()
    target = cached_path(url)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "vlmtune"})
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:  # noqa: S310 (http(s) only, checked by is_url)
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"{url} is over {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB, too big for an "
                                        "image")
                out.write(chunk)
        if size == 0:
            raise DownloadError(f"{url} sent an empty file")
        part.replace(target)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{url} could not be reached ({exc.reason})") from None
    except (TimeoutError, OSError) as exc:
        raise DownloadError(f"{url} failed ({type(exc).__name__}: {exc})") from None
    finally:
        part.unlink(missing_ok=True)
    return target


def _log_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 10) == 0:
        log.info("downloaded %d of %d image URLs into %s", done, total, cache_dir())


def fetch_all(urls: Iterable[str], progress: Callable[[int, int], None] | None = None,
              workers: int = WORKERS) -> tuple[dict[str, Path], dict[str, str]]:
    """Every distinct URL fetched once (several at a time): (url -> local path, url -> why it failed).

    `progress(done, total)` is called after each URL when there are many; by default it logs every tenth."""
    unique = list(dict.fromkeys(u.strip() for u in urls))
    todo = [u for u in unique if not cached_path(u).is_file()]
    pending = set(todo)
    paths = {u: cached_path(u) for u in unique if u not in pending}
    failures: dict[str, str] = {}
    report = progress or _log_progress
    if not todo:
        return paths, failures

    def one(url: str) -> tuple[str, Path | None, str | None]:
        try:
            return url, fetch(url), None
        except DownloadError as exc:
            return url, None, str(exc)

    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        for done, (url, path, error) in enumerate(pool.map(one, todo), start=1):
            if path is not None:
                paths[url] = path
            else:
                failures[url] = error or "failed"
            if len(todo) >= PROGRESS_FROM or progress is not None:
                report(done, len(todo))
    return paths, failures
