"""Micro-batching of query encoding across concurrent requests, with an LRU of recent query vectors.

A tower forward over 16 queries costs little more than over one, so when requests overlap their queries are
encoded together. One forward runs at a time: queries that arrive while it runs wait for it and then go in the
next forward together (up to ``max_batch``; a full batch starts at once), so batches grow with the load and an
idle service adds no wait. With no forward running, a query waits at most ``max_wait_ms`` for company, and not at
all when no other admitted request could join (``busy()`` says how many are in flight). Repeated queries (a
search engine's head queries) come from the cache without a forward.

Example::

    batcher = QueryBatcher(searcher.encode_queries, BatcherConfig(max_batch=16), run=pool_runner, busy=lambda: 3)
    q = await batcher.encode("red dress")                    # (D,) float32
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import torch

from .config import BatcherConfig

__all__ = ["QueryBatcher"]


class _LRU:
    """A thread-safe bounded mapping query -> vector (least recently used out first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: torch.Tensor) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class QueryBatcher:
    """Encode query texts into (D,) vectors, batching concurrent callers (one event loop).

    Args:
        encode: ``list[str] -> (B, D)`` (the searcher's query encoder: PyTorch or ONNX); runs through ``run``.
        config: batching settings; ``enabled=False`` encodes each query on its own (the cache still applies).
        run: ``run(fn) -> awaitable`` running blocking work off the event loop (the service's thread pool).
        busy: the number of requests in flight now (a batch is flushed at once when nobody else can join).
        on_batch: called with each forward's batch size (a metric).
        on_hit: called for each query served from the cache (a metric).
    """

    def __init__(
        self,
        encode: Callable[[list[str]], torch.Tensor],
        config: BatcherConfig,
        *,
        run: Callable[[Callable[[], torch.Tensor]], Awaitable[torch.Tensor]],
        busy: Callable[[], int] = lambda: 1,
        on_batch: Callable[[int], None] | None = None,
        on_hit: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._encode = encode
        self._run = run
        self._busy = busy
        self._on_batch = on_batch or (lambda n: None)
        self._on_hit = on_hit or (lambda: None)
        self._cache = _LRU(config.cache_size)
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0  # forwards in progress

    def solo(self) -> bool:
        """True when a query arriving now would be encoded on its own at once: no forward running, none pending,
        and no other admitted request that could join (or batching is off). The caller may then encode in the
        same thread hop as the rest of its work (:meth:`encode_blocking`): one pool hand-off instead of two."""
        if not self.config.enabled:
            return True
        return not self._running and not self._pending and self._busy() <= 1

    def encode_blocking(self, query: str) -> torch.Tensor:
        """:meth:`encode` for one query without batching, run by the caller's own thread (cache, metrics and
        result as :meth:`encode`); for a caller that saw :meth:`solo`."""
        cached = self._cache.get(query)
        if cached is not None:
            self._on_hit()
            return cached
        self._on_batch(1)
        vector = torch.as_tensor(self._encode([query]), dtype=torch.float32)[0]  # (D,)
        self._cache.put(query, vector)
        return vector

    async def encode(self, query: str) -> torch.Tensor:
        """The projected unit vector (D,) of ``query``."""
        cached = self._cache.get(query)
        if cached is not None:
            self._on_hit()
            return cached
        if not self.config.enabled:
            return (await self._forward([query]))[0]
        future = asyncio.get_running_loop().create_future()
        self._pending.append((query, future))
        if len(self._pending) >= self.config.max_batch:
            self._flush()  # full: go now, even next to a running forward
        elif self._running:
            pass  # the running forward's end starts the next batch, with whatever arrived meanwhile
        elif len(self._pending) >= max(1, self._busy()) or self.config.max_wait_ms == 0:
            self._flush()  # every request in flight is already waiting here: waiting gains nothing
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.config.max_wait_ms / 1000, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.config.max_batch], self._pending[self.config.max_batch :]
        if batch:
            self._running += 1
            asyncio.ensure_future(self._run_batch(batch))

    async def _run_batch(self, batch: list[tuple[str, asyncio.Future]]) -> None:
        texts = list(dict.fromkeys(q for q, _ in batch))
        try:
            vectors = await self._forward(texts)
        except BaseException as err:  # every waiter learns of the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        finally:
            self._running -= 1
            if self._pending and not self._running:
                self._flush()  # the queries that arrived during this forward
        row = {q: vectors[i] for i, q in enumerate(texts)}
        for q, future in batch:
            if not future.done():  # a caller that timed out has cancelled its future
                future.set_result(row[q])

    async def _forward(self, texts: list[str]) -> torch.Tensor:
        self._on_batch(len(texts))
        vectors = await self._run(lambda: self._encode(texts))  # (B, D)
        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        for q, v in zip(texts, vectors, strict=True):
            self._cache.put(q, v.clone())  # a row view would keep the whole batch alive
        return vectors
