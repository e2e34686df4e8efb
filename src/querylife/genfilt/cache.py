"""Append-only JSONL cache of product descriptions, safe against kills and shared by threads.

One JSON object per line: ``product_id``, ``content_hash``, ``describer``, ``prompt_version``, ``text``,
``created_at`` (UTC, ISO 8601). The key is ``(product_id, content_hash, describer, prompt_version)``; when a
key appears twice the last line wins. Lines are only ever appended (then flushed and fsynced), so a kill can
at worst leave a torn last line: it is ignored on load and cut off before the next append.

Example::

    cache = DescriptionCache("runs/genfilt/descriptions.jsonl")
    if cache.get(item, describer.name, prompt.version) is None:
        cache.put_many([(item, "red floral midi dress, cotton")], describer.name, prompt.version)
    texts = cache.latest(describer.name, prompt.version)  # product_id -> text
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from .base import ProductInput, content_hash

try:  # advisory lock so that two processes appending to one file do not interleave (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FIELDS = ("product_id", "content_hash", "describer", "prompt_version", "text", "created_at")

Key = tuple[str, str, str, str]


class CacheError(ValueError):
    """A cache file that cannot be read (names the file and the line)."""


def _key(record: dict) -> Key:
    return (record["product_id"], record["content_hash"], record["describer"], record["prompt_version"])


def _parse(line: bytes) -> dict | None:
    """The record on ``line``, or None when it is not a complete, well-formed record."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or any(not isinstance(record.get(f), str) for f in FIELDS[:5]):
        return None
    return record


class DescriptionCache:
    """Append-only JSONL file of descriptions; see the module docstring for the format.

    Loading reads the whole file into memory (a dict from key to record: about 300 bytes a product). A torn
    last line (from a kill) is ignored and cut off on the next write; a malformed line anywhere else is an
    error naming the file and line, since an append-only file cannot get one by being interrupted.

    :meth:`put_many` is thread-safe, and takes an advisory file lock (POSIX) so that several processes may
    append to one file; each instance only sees the lines that were there when it was opened plus its own.

    Example::

        cache = DescriptionCache(tmp_path / "descriptions.jsonl")
        cache.put_many([(item, "usb-c cable, 2 m, braided")], "openai:http://127.0.0.1:8000/v1:m", "v1")
        assert cache.get(item, "openai:http://127.0.0.1:8000/v1:m", "v1") == "usb-c cable, 2 m, braided"
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: dict[Key, dict] = {}
        self.lines_read = 0  # complete lines on disk when loaded (duplicates included)
        self.torn_tail = False  # a partial last line was found (and will be cut off on the next write)
        if self.path.exists():
            self._load()

    # ------------------------------------------------------------------------------------------------------
    # reading

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise CacheError(f"{self.path}: cannot read the description cache: {e}") from e
        lines = data.split(b"\n")
        # The piece after the last newline is either empty or a line that a kill interrupted.
        tail = lines.pop()
        if tail.strip():
            record = _parse(tail)
            if record is None:
                self.torn_tail = True
                log.warning("%s: ignoring a torn last line (%d bytes), likely from a killed run", self.path, len(tail))
            else:  # complete record that only lost its newline: keep it (the next write adds the newline)
                lines.append(tail)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                excerpt = line[:120].decode("utf-8", "replace")
                raise CacheError(
                    f"{self.path}, line {number}: not a description record (needs string fields "
                    f"{', '.join(FIELDS[:5])}): {excerpt!r}. Delete the line (or the file: the descriptions "
                    "are made again on the next run)."
                )
            self._records.pop(_key(record), None)  # re-insert so that iteration order follows the file
            self._records[_key(record)] = record
            self.lines_read += 1

    def get(
        self, item: ProductInput, describer: str, prompt_version: str, *, content_hash_: str | None = None
    ) -> str | None:
        """The cached text for ``item`` as it is now, or None.

        Args:
            content_hash_: ``content_hash(item)`` when the caller already has it (hashing reads the image).
        """
        h = content_hash_ if content_hash_ is not None else content_hash(item)
        record = self._records.get((item.product_id, h, describer, prompt_version))
        return None if record is None else record["text"]

    def __len__(self) -> int:
        """Number of distinct keys (a rewritten key counts once)."""
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def items(self) -> Iterator[dict]:
        """Current records (one per key, the last written), in the order of their last write; copies."""
        with self._lock:
            records = list(self._records.values())
        return (dict(r) for r in records)

    def latest(
        self, describer: str, prompt_version: str, items: Sequence[ProductInput] | None = None
    ) -> dict[str, str]:
        """``product_id -> text`` for one describer and prompt version.

        Without ``items``: the most recently written description of each product (a product that changed
        was described again later, so its newest text wins). With ``items``: only descriptions that match
        each item's current content (products whose description is stale or missing are left out).
        """
        if items is not None:
            out = {}
            for item in items:
                text = self.get(item, describer, prompt_version)
                if text is not None:
                    out[item.product_id] = text
            return out
        with self._lock:
            records = list(self._records.values())
        return {
            r["product_id"]: r["text"]
            for r in records
            if r["describer"] == describer and r["prompt_version"] == prompt_version
        }

    # ------------------------------------------------------------------------------------------------------
    # writing

    def put_many(
        self,
        records: list[tuple[ProductInput, str]],
        describer: str,
        prompt_version: str,
        *,
        content_hashes: Sequence[str] | None = None,
    ) -> None:
        """Append ``(item, text)`` records, then flush and fsync before returning.

        Args:
            content_hashes: ``content_hash(item)`` for each record when the caller already has them.
        """
        if not records:
            return
        if content_hashes is not None and len(content_hashes) != len(records):
            raise ValueError(f"{len(content_hashes)} content hashes for {len(records)} records")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        new = []
        for i, (item, text) in enumerate(records):
            if not isinstance(text, str):
                raise TypeError(f"description of {item.product_id!r} is {type(text).__name__}, not str")
            h = content_hashes[i] if content_hashes is not None else content_hash(item)
            new.append(
                {
                    "product_id": item.product_id,
                    "content_hash": h,
                    "describer": describer,
                    "prompt_version": prompt_version,
                    "text": text,
                    "created_at": now,
                }
            )
        # One write call for the whole batch: a kill leaves at most one torn line, never an interleaving.
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new).encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as f:  # readable too: the tail is checked before appending
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                try:
                    self._repair_tail(f)
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                finally:
                    if fcntl is not None:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            for r in new:
                self._records.pop(_key(r), None)
                self._records[_key(r)] = r
            self.torn_tail = False

    def _repair_tail(self, f) -> None:
        """Make the file end with a newline: cut off a torn last line, or end a complete one.

        Looked at under the file lock at write time (not from what was loaded) so that a line another process
        finished writing since this one loaded is never cut off.
        """
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        # Walk back to the last newline; lines are short, so this reads a few KiB at most.
        start, chunk = size, 4096
        while start > 0:
            lo = max(0, start - chunk)
            block = os.pread(fd, start - lo, lo)
            nl = block.rfind(b"\n")
            if nl >= 0:
                start = lo + nl + 1
                break
            start = lo
        tail = os.pread(fd, size - start, start)
        if _parse(tail) is not None:
            f.write(b"\n")
        else:
            log.warning("%s: cutting off a torn last line (%d bytes) before appending", self.path, len(tail))
            os.ftruncate(fd, start)
