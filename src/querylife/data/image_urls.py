"""Image URLs in a catalogue: fetched once into a local cache when asked, refused with instructions otherwise.

Users' catalogues usually hold ``http(s)://`` image URLs rather than files. With ``data.download_images`` on,
:func:`localise_image_urls` replaces each URL by a file in the cache directory (``data.image_cache``, default
``$XDG_CACHE_HOME/querylife/images`` or ``~/.cache/querylife/images``), downloading only what is not there yet:

* the file name is the SHA-256 of the URL (plus the URL's image extension), so the same URL is fetched once and
  two URLs never share a file; a file is written atomically (temporary file, then rename), so an interrupted run
  never leaves half an image behind;
* each download has a timeout (``data.image_timeout_s``) and a size bound (``data.image_max_bytes``), and must
  decode as an image before it is kept;
* a failure is a :class:`DataError` naming the catalogue file, row, column and URL, or with ``skip_bad`` the
  product keeps no image and the failure is counted (``image download failed`` in the bad-row tally).

With ``data.download_images`` off (the default: querylife reaches the network only when asked) any URL is an
:class:`ImageURLsRefused` error that says how to turn downloading on or how to pre-download. A URL never
silently becomes "no image".
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from .errors import BadRows, DataError
from .notes import Notes

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFetch",
    "ImageURLsRefused",
    "cache_path",
    "default_cache_dir",
    "download_image",
    "is_url",
    "localise_image_urls",
    "looks_like_images",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic")
_USER_AGENT = "querylife (catalogue image fetch)"


def is_url(text: str) -> bool:
    """Whether ``text`` has a URL scheme (``http://``, ``s3://``...); ``file://`` is read as a local path."""
    return "://" in text[:16]


def looks_like_images(values: Sequence[object]) -> bool:
    """Whether most of ``values`` (a column's first non-empty cells) look like image paths or ``http(s)`` URLs."""
    texts = [str(v).strip() for v in values if v is not None and str(v).strip() and str(v) != "nan"]
    if not texts:
        return False
    hits = 0
    for t in texts:
        low = t.lower()
        path = urllib.parse.urlsplit(low).path if is_url(low) else low
        if low.startswith(("http://", "https://")) or path.endswith(IMAGE_SUFFIXES):
            hits += 1
    return hits * 2 >= len(texts)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/querylife/images``, else ``~/.cache/querylife/images``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "querylife" / "images"


@dataclass(frozen=True)
class ImageFetch:
    """Whether and how image URLs are downloaded (``data.download_images``, ``data.image_*``)."""

    download: bool = False
    cache_dir: str | None = None  # None: default_cache_dir()
    timeout_s: float = 30.0
    max_bytes: int = 20_000_000
    threads: int = 8

    @property
    def directory(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @classmethod
    def from_config(cls, data: Any) -> ImageFetch:
        """The settings a ``DataConfig`` holds (``download_images``, ``image_cache``, ``image_*``)."""
        return cls(download=data.download_images, cache_dir=data.image_cache, timeout_s=data.image_timeout_s,
                   max_bytes=data.image_max_bytes)


class ImageURLsRefused(DataError):
    """The catalogue holds image URLs and downloading is off; ``n_urls`` and ``rows`` (1-based) say where."""

    def __init__(self, message: str, *, n_urls: int, rows: list[int], file: str | None, field: str | None) -> None:
        self.n_urls = n_urls
        self.rows = rows
        super().__init__(message, file=file, field=field, row=rows[0] if rows else None)


def cache_path(url: str, cache_dir: str | os.PathLike) -> Path:
    """Where ``url`` is cached: ``<cache_dir>/<sha256 of the URL><its image extension or .img>``."""
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lower()
    return Path(cache_dir) / (hashlib.sha256(url.encode("utf-8")).hexdigest() + (
        suffix if suffix in IMAGE_SUFFIXES else ".img"))


def download_image(url: str, dest: str | os.PathLike, *, timeout_s: float = 30.0, max_bytes: int = 20_000_000) -> None:
    """Fetch ``url`` into ``dest`` (atomically), after checking that it is at most ``max_bytes`` and decodes.

    Raises:
        DataError: the reason (HTTP status, network error, timeout, too large, not an image), naming the URL.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DataError(f"cannot fetch {url}: only http(s) URLs are downloaded (scheme {scheme!r}); download the "
                        "images yourself and give local paths")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise DataError(f"cannot fetch {url}: {int(length)} bytes, more than data.image_max_bytes "
                                f"({max_bytes})")
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise DataError(f"cannot fetch {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"cannot fetch {url}: {e.reason}") from None
    except (TimeoutError, OSError) as e:  # socket timeouts and resets while reading the body
        raise DataError(f"cannot fetch {url}: {type(e).__name__}: {e or 'timed out'}") from None
    if len(data) > max_bytes:
        raise DataError(f"cannot fetch {url}: more than data.image_max_bytes ({max_bytes}) bytes")
    if not data:
        raise DataError(f"cannot fetch {url}: the server sent 0 bytes")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as e:  # PIL raises many types for non-images; all mean "not an image"
        raise DataError(f"cannot use {url}: not an image PIL can read ({type(e).__name__})") from None
    atomic_write_bytes(dest, data)


def localise_image_urls(
    paths: Sequence[str | None],
    *,
    fetch: ImageFetch,
    file: str | None = None,
    column: str = "image_path",
    rows: Sequence[int] | None = None,
    skip_bad: bool = False,
    report: BadRows | None = None,
    notes: Notes | None = None,
    progress: bool = False,
) -> list[str | None]:
    """``paths`` with every URL replaced by its cached file (downloaded when missing); local paths unchanged.

    Args:
        paths: one image path or URL (or None) per product.
        fetch: whether to download, where to cache, time and size bounds.
        file, column, rows: the catalogue file, the column the paths came from and the 1-based row of each
            path, for messages.
        skip_bad: a URL that cannot be fetched leaves its product without an image (counted in ``report``)
            instead of raising.
        notes: gets one line saying how many URLs were found, cached and downloaded (and failed).

    Raises:
        ImageURLsRefused: URLs while ``fetch.download`` is off.
        DataError: the first URL that cannot be fetched (file, row, column, URL and reason), unless ``skip_bad``.
    """
    row_of = list(rows) if rows is not None else list(range(1, len(paths) + 1))
    where = [i for i, p in enumerate(paths) if isinstance(p, str) and is_url(p)]
    if not where:
        return list(paths)
    name = Path(file).name if file else "catalogue"
    if not fetch.download:
        example = paths[where[0]]
        raise ImageURLsRefused(
            f"{len(where)} image URLs (e.g. {example}); querylife downloads images only when asked: set "
            f"data.download_images=true (on the command line: --set data.download_images=true) to fetch each once "
            f"into {fetch.directory} (data.image_cache), or download them yourself and put local paths in the "
            "column (relative paths are read from the catalogue's folder)",
            n_urls=len(where), rows=[row_of[i] for i in where], file=file, field=column,
        )
    directory = fetch.directory
    urls = list(dict.fromkeys(paths[i] for i in where))  # the same URL for several products: fetched once
    missing = [u for u in urls if not cache_path(u, directory).is_file()]
    failed: dict[str, str] = {}
    if missing:
        directory.mkdir(parents=True, exist_ok=True)

        def one(url: str) -> tuple[str, str | None]:
            try:
                download_image(url, cache_path(url, directory), timeout_s=fetch.timeout_s, max_bytes=fetch.max_bytes)
            except DataError as e:
                return url, e.detail
            return url, None

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(missing), desc="downloading images", unit="img")
        with ThreadPoolExecutor(max_workers=max(1, min(fetch.threads, len(missing)))) as pool:
            for url, err in pool.map(one, missing):
                if err is not None:
                    failed[url] = err
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    out = list(paths)
    n_bad = 0
    for i in where:
        url = paths[i]
        if url in failed:
            if not skip_bad:
                raise DataError(failed[url], file=file, row=row_of[i], field=column)
            n_bad += 1
            if report is not None:
                report.add("image download failed", file=file, row=row_of[i], field=column, message=failed[url])
            out[i] = None
        else:
            out[i] = str(cache_path(url, directory))
    if notes is not None:
        got = len(missing) - len(failed)
        text = (f"images: {len(where)} URLs in {name} column {column!r}: {len(urls) - len(missing)} already in the "
                f"cache {directory}, {got} downloaded")
        notes.info("image-urls", text)
        if n_bad:
            notes.warn("image-urls-failed", f"images: {n_bad} products' URLs could not be fetched (skip_bad_rows): "
                                            "those products have no image")
    return out
