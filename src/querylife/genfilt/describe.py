"""GenFilt stage 1: describe a catalogue, resumably, through a cache.

:func:`describe_catalog` skips products whose description is already cached for their current content, asks
the describer for the rest in batches, and appends each batch's successes to the cache as soon as the batch
returns: a killed run loses at most the batch in flight, and the next run picks up where it stopped. Failures
are counted by reason and not cached, so the next run tries them again.

Example::

    items = products_from_catalog(load_catalog("catalog.parquet"))
    describer = OpenAIDescriber("http://127.0.0.1:8000/v1", "Qwen/Qwen2-VL-2B-Instruct")
    describer.check()
    summary = describe_catalog(items, describer, PromptTemplate(), DescriptionCache("runs/descriptions.jsonl"))
    print(summary.to_text())  # described 120 (40.0%), cached 170 (56.7%), failed 10 (3.3%): timeout 7, garbage 3
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from .base import DescribeError, Describer, ProductInput, PromptTemplate, content_hash
from .cache import DescriptionCache

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

# Failures that say the describer cannot work at all (server down, key refused, wrong URL or model): when a
# whole batch fails with these, going on would only fail every remaining product, slowly (with retries).
FATAL_REASONS = frozenset({"unreachable", "http_401", "http_403", "http_404"})
MAX_EXAMPLES = 10


@dataclass
class DescribeSummary:
    """What one :func:`describe_catalog` run did.

    ``total = described + cached + sum(failed.values()) + pending``; ``pending`` counts products not tried
    in this run (beyond ``limit``, or left when the run stopped early, with ``stopped`` saying why).

    Example::

        DescribeSummary(total=300, described=120, cached=170, failed={"timeout": 7, "garbage": 3},
                        examples=[], seconds=12.5).to_text()
        # 'described 120 (40.0%), cached 170 (56.7%), failed 10 (3.3%): timeout 7, garbage 3'
    """

    total: int
    described: int
    cached: int
    failed: dict[str, int]
    examples: list[tuple[str, str]] = field(default_factory=list)  # (product_id, error message), at most 10
    seconds: float = 0.0
    pending: int = 0
    stopped: str | None = None

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    def _pct(self, n: int) -> str:
        return f"{100.0 * n / self.total if self.total else 0.0:.1f}%"

    def to_text(self) -> str:
        """One line: counts with shares of the total, failures by reason (most common first)."""
        text = (
            f"described {self.described} ({self._pct(self.described)}), cached {self.cached} "
            f"({self._pct(self.cached)}), failed {self.n_failed} ({self._pct(self.n_failed)})"
        )
        if self.n_failed:
            reasons = sorted(self.failed.items(), key=lambda kv: (-kv[1], kv[0]))
            text += ": " + ", ".join(f"{reason} {n}" for reason, n in reasons)
        if self.pending:
            text += f"; pending {self.pending} ({self._pct(self.pending)})"
        if self.stopped:
            text += f"; stopped early: {self.stopped}"
        return text


def _as_error(result: object) -> DescribeError | None:
    """None for a usable description, else the error to count (describers may return odd things)."""
    if isinstance(result, DescribeError):
        return result
    if isinstance(result, str):
        return None if result.strip() else DescribeError("empty", "the describer returned an empty description")
    return DescribeError("garbage", f"the describer returned {type(result).__name__}, not str or DescribeError")


def describe_catalog(
    items: Sequence[ProductInput],
    describer: Describer,
    prompt: PromptTemplate,
    cache: DescriptionCache,
    *,
    batch_size: int = 16,
    progress: bool = True,
    limit: int | None = None,
) -> DescribeSummary:
    """Describe every product that the cache does not already hold for its current content.

    Args:
        items: the products (see :func:`products_from_catalog`). The same product listed twice (same id and
            content) is described once and counted twice.
        describer: anything with ``name`` and ``describe_batch``; its ``name`` is part of the cache key.
        prompt: its ``version`` is part of the cache key.
        cache: where descriptions are read from and appended to.
        batch_size: products per ``describe_batch`` call, and so the most a kill can lose. Keep it a few times
            the describer's concurrency so that its slots stay busy.
        progress: show a tqdm bar (with ETA) over the products to describe.
        limit: describe at most this many products in this run (cached ones do not count), so a big catalogue
            can be done in chunks or a new prompt tried on a few; the rest are counted as ``pending``.

    A describer may also offer ``describe_batches(batches, prompt)``, yielding each batch's results in order (the
    Ray describer does, to describe batches in parallel); the cache is still written batch by batch, in order.

    Returns:
        A :class:`DescribeSummary`. The run stops early (``stopped`` set, the rest ``pending``) when a whole
        batch fails with one of :data:`FATAL_REASONS`.

    Raises:
        ValueError: a bad ``batch_size``/``limit``, or a describer that returns the wrong number of results.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    from tqdm.auto import tqdm

    start = time.monotonic()
    name, version = describer.name, prompt.version

    # Hash once here (hashing reads each image) and pass the hashes to the cache.
    hashes: list[str] = []
    copies: dict[tuple[str, str], list[int]] = {}  # (product_id, hash) -> indices into items
    cached = 0
    todo: list[int] = []  # first index of each key that needs describing
    for i, item in enumerate(tqdm(items, desc="checking cache", unit="item", disable=not progress, leave=False)):
        h = content_hash(item)
        hashes.append(h)
        key = (item.product_id, h)
        seen = copies.setdefault(key, [])
        seen.append(i)
        if cache.get(item, name, version, content_hash_=h) is not None:
            cached += 1
        elif len(seen) == 1:
            todo.append(i)

    def weight(i: int) -> int:
        return len(copies[(items[i].product_id, hashes[i])])

    pending_idx = todo[limit:] if limit is not None else []
    todo = todo[:limit] if limit is not None else todo
    described = 0
    failed: Counter[str] = Counter()
    examples: list[tuple[str, str]] = []
    stopped: str | None = None

    bar = tqdm(total=len(todo), desc="describing", unit="item", disable=not progress, dynamic_ncols=True)
    answers: Iterable[Sequence[object]] = ()
    try:
        n_batches = math.ceil(len(todo) / batch_size)
        batches = [todo[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
        # A describer that runs batches in parallel (querylife.ray_jobs.RayDescriber) gets them all at once and
        # yields each batch's results in order; the rest are asked one batch at a time.
        many = getattr(describer, "describe_batches", None)
        answers = (many([[items[i] for i in batch] for batch in batches], prompt) if many is not None else
                   (describer.describe_batch([items[i] for i in batch], prompt) for batch in batches))
        for b, (batch, results) in enumerate(zip(batches, answers, strict=True)):
            if len(results) != len(batch):
                raise ValueError(f"describer {name!r} returned {len(results)} results for {len(batch)} products")
            ok: list[tuple[ProductInput, str]] = []
            ok_hashes: list[str] = []
            errors: list[DescribeError] = []
            for i, result in zip(batch, results, strict=True):
                error = _as_error(result)
                if error is None:
                    ok.append((items[i], result.strip()))  # type: ignore[union-attr]
                    ok_hashes.append(hashes[i])
                    described += weight(i)
                else:
                    errors.append(error)
                    failed[error.reason] += weight(i)
                    if len(examples) < MAX_EXAMPLES:
                        examples.append((items[i].product_id, str(error)))
            # Written before the next batch starts, so a kill loses at most the batch in flight.
            cache.put_many(ok, name, version, content_hashes=ok_hashes)
            bar.update(len(batch))
            if failed:
                bar.set_postfix(failed=sum(failed.values()), refresh=False)
            if not ok and errors and all(e.reason in FATAL_REASONS for e in errors):
                stopped = f"every product of a batch failed ({errors[0]})"
                pending_idx = todo[(b + 1) * batch_size :] + pending_idx
                log.error("stopping: %s", stopped)
                break
    finally:
        bar.close()
        close = getattr(answers, "close", None)
        if close is not None:  # a parallel describer stops the batches it has in flight
            close()

    summary = DescribeSummary(
        total=len(items),
        described=described,
        cached=cached,
        failed=dict(failed),
        examples=examples,
        seconds=time.monotonic() - start,
        pending=sum(weight(i) for i in pending_idx),
        stopped=stopped,
    )
    log.info("genfilt describe (%s, prompt %s): %s", name, version, summary.to_text())
    return summary


def products_from_catalog(catalog: pandas.DataFrame) -> list[ProductInput]:
    """Products to describe from querylife's normalised catalogue.

    Uses the columns ``product_id``, ``title``, ``product_type`` and, when present, ``image_path`` (missing
    values and empty strings mean no image), as :func:`~querylife.data.readers.load_catalog` gives them.

    Raises:
        ValueError: a required column is missing (naming the columns found).
    """
    required = ("product_id", "title", "product_type")
    missing = [c for c in required if c not in catalog.columns]
    if missing:
        found = ", ".join(map(str, catalog.columns))
        raise ValueError(f"catalogue lacks column(s) {', '.join(missing)}; it has {found}")
    images = catalog["image_path"] if "image_path" in catalog.columns else [None] * len(catalog)
    out = []
    for pid, title, ptype, image in zip(
        catalog["product_id"], catalog["title"], catalog["product_type"], images, strict=True
    ):
        path = image if isinstance(image, str) and image.strip() else None
        out.append(ProductInput(str(pid), str(title), str(ptype), path))
    return out


QUERY_ID_PREFIX = "query:"


def query_items(queries: Sequence[str]) -> list[ProductInput]:
    """Distinct queries as describable items (``genfilt describe --queries``): id ``query:<text>``, the text as
    the title, no type, no image. Example: ``query_items(["red dress"])[0].product_id == "query:red dress"``."""
    return [ProductInput(f"{QUERY_ID_PREFIX}{q}", str(q), "") for q in dict.fromkeys(queries)]


def query_descriptions(store: DescriptionCache, describer: str, version: str) -> dict[str, str]:
    """query -> its generated intent description, from a description cache written with ``--queries``."""
    n = len(QUERY_ID_PREFIX)
    return {p[n:]: t for p, t in store.latest(describer, version).items() if p.startswith(QUERY_ID_PREFIX)}


def make_describer(config) -> Describer:
    """The describer configured in ``genfilt`` (an OpenAI-compatible server, a local HF model, or a local causal LM
    from a folder, a .gguf file or a packaged name)."""
    g = config.genfilt
    if not g.model:
        raise ValueError("no generative model: set genfilt.model (the server's model name, or a local HF directory)")
    if g.describer == "hf":
        from .hf import HFDescriber

        return HFDescriber(g.model, kind=g.hf_kind, batch_size=g.batch_size)
    if g.describer == "local":
        from .hf import HFDescriber
        from .lm import local_model_dir

        # A text-only causal LM: descriptions from title and type; photos need a VLM (describer=hf, hf_kind=vision).
        folder = local_model_dir(g.model, g.lm_cache_dir or None, log=log.info)
        return HFDescriber(str(folder), kind="text", batch_size=g.batch_size, name=f"local:{g.model}")
    from .openai_client import OpenAIDescriber

    return OpenAIDescriber(
        g.base_url, g.model, max_concurrency=g.max_concurrency, timeout_s=g.timeout_s, max_retries=g.max_retries
    )


def describe_from_config(
    config,
    *,
    queries: bool = False,
    path: str | None = None,
    cache: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    log=print,
    ray=None,
) -> DescribeSummary:
    """``querylife genfilt describe``: describe every product of the catalogue (or, with ``queries``, every query's
    intent from the pairs) with the configured describer into the description cache.

    ``path``: the catalogue (pairs with ``queries``; default ``data.catalog`` / ``data.pairs``); ``cache``: default
    ``genfilt.cache``. ``ray``: a :class:`~querylife.ray_jobs.RayOptions` to describe the batches on Ray actors (each
    makes its own describer; the same cache records). An OpenAI-compatible server is checked first. Raises ValueError
    (no data, no model; bad Ray options or no Ray), :class:`~querylife.data.errors.DataError` (bad data) or
    :class:`DescribeError` (server unreachable).
    """
    from ..data.readers import load_catalog, load_pairs

    g = config.genfilt
    path = path or (config.data.pairs if queries else config.data.catalog)
    if not path:
        raise ValueError(
            "no pairs: give --pairs (or data.pairs)" if queries else "no catalogue: give --catalog (or data.catalog)"
        )
    if not g.model:
        raise ValueError("no model: set genfilt.model (the server's model name, or a local HF model directory)")
    # The same column mapping and title normalisation as training reads (querylife.data.columns / titles).
    columns = dict(config.data.columns)
    if queries:
        items = query_items(load_pairs(path, columns=columns)[0]["query"].astype(str).tolist())
    else:
        items = products_from_catalog(load_catalog(path, columns=columns, max_title_chars=config.data.max_title_chars))
    if ray is not None:
        from ..ray_jobs import require_ray

        ray.check()
        require_ray()
    prompt = g.query_prompt if queries else g.prompt
    if ray is not None and g.describer == "hf":  # the model is loaded by each Ray actor, not here
        from ..ray_jobs import RayDescriber
        from .hf import HFDescriber

        describer: Describer = RayDescriber(HFDescriber.name_for(g.model, g.hf_kind), partial(make_describer, config),
                                            ray)
    else:
        describer = make_describer(config)
        check = getattr(describer, "check", None)
        if check is not None:
            check()
        if ray is not None:
            from ..ray_jobs import RayDescriber

            describer = RayDescriber(describer.name, partial(make_describer, config), ray)
    cache = cache or g.cache
    log(f"describer {describer.name}, {'queries' if queries else 'products'}, prompt {prompt.version}, cache {cache}")
    return describe_catalog(
        items, describer, prompt, DescriptionCache(cache), batch_size=g.batch_size, progress=progress, limit=limit
    )
