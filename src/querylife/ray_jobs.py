"""Offline jobs on Ray: ``querylife embed --ray`` and ``querylife genfilt describe --ray``.

The work is split as the single-process path splits it (embedding: the store's shards; describing: the describer's
batches), each piece runs on a pool of Ray Data actors that load the model (or describer) once, and the driver
writes each result as it arrives, in order, through the same code as the single-process run (the store's manifest,
the description cache). So the output is the same (store shards byte for byte, cache records), a killed run leaves
the same prefix of complete shards or batches, and a rerun resumes where it stopped. docs/RAY.md tells how to run
it on one machine or an existing cluster.

Example::

    from querylife.ray_jobs import RayOptions, embed_catalogue_ray
    result = embed_catalogue_ray("runs/exp1/best", load_catalogue(cfg.data), "store", RayOptions(workers=4))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .encode import Catalogue
    from .genfilt.base import DescribeError, Describer, ProductInput, PromptTemplate
    from .store import EmbedResult, ShardData

__all__ = ["RayDescriber", "RayJobError", "RayOptions", "embed_catalogue_ray", "ray_session", "require_ray"]

INSTALL_HINT = 'pip install "querylife[ray]"'
# ray://host:port (Ray Client), host:port (a node of the cluster, as `ray start --address` takes), or auto.
_ADDRESS = re.compile(r"^(auto|ray://[^\s:/]+:\d+|[^\s:/]+:\d+)$")


class RayJobError(ValueError):
    """Ray is missing, or the Ray options are wrong (the message says which and what to do)."""


@dataclass
class RayOptions:
    """Where and how wide a Ray job runs.

    ``address``: None starts a local Ray instance for the job (``workers`` CPUs); ``auto`` joins the cluster this
    machine belongs to (``ray start``); ``ray://host:port`` connects through Ray Client; ``host:port`` joins the
    cluster at that head. ``workers``: actors in the pool, each loading the model once (default: the cluster's
    CPUs over ``cpus_per_worker``, at most one per piece of work). ``cpus_per_worker``: CPUs each actor reserves
    (Ray sets the actor's torch/OMP threads to it).

    Example::

        RayOptions(address="ray://head:10001", workers=8).check()
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0

    def check(self) -> RayOptions:
        """Raise RayJobError for a malformed address or a non-positive count; return self."""
        if self.address is not None and not _ADDRESS.match(self.address):
            raise RayJobError(f"--ray-address {self.address!r}: give auto, ray://HOST:PORT or HOST:PORT")
        if self.workers is not None and self.workers < 1:
            raise RayJobError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise RayJobError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        return self


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or RayJobError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate extra of ray
    except ImportError as err:
        raise RayJobError(f"--ray needs Ray with Ray Data ({err}); install it with: {INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Ray, initialised for one job: an already initialised session is used as it is (and left running);
    otherwise a local instance (``options.address`` None) or the given cluster is joined, and left at the end."""
    ray = require_ray()
    options.check()
    if ray.is_initialized():
        yield ray
        return
    if options.address is None:
        cpus = int(np.ceil((options.workers or 1) * options.cpus_per_worker)) if options.workers else None
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=options.address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _pool_size(ray: Any, options: RayOptions, pieces: int) -> int:
    if options.workers is not None:
        return max(1, min(options.workers, pieces))
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, min(pieces, int(cpus // options.cpus_per_worker) or 1))


def _ordered_map(ray: Any, n: int, udf: type, constructor: dict[str, Any], options: RayOptions
                 ) -> Iterator[dict[str, Any]]:
    """Run ``udf`` (a callable class) on pieces 0..n-1, one piece per call, on an actor pool; yield the output
    rows in piece order as they complete (Ray Data's streaming executor with ``preserve_order``)."""
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start)
    # Order matters: the driver writes shards (batches) in order, so a kill leaves a prefix, as without Ray.
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the job's own tqdm bar counts products, with ETA
    ctx.print_on_execution_start = False
    try:  # kept until the last row is read: the settings apply to the whole execution
        ds = ray.data.from_items([{"piece": k} for k in range(n)], override_num_blocks=n).map_batches(
            udf, batch_size=1, compute=ActorPoolStrategy(size=_pool_size(ray, options, n)),
            num_cpus=options.cpus_per_worker, fn_constructor_kwargs=constructor,
        )
        yield from ds.iter_rows()
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start = saved


def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


# ----------------------------------------------------------------------------------------------------------
# querylife embed --ray


class _ShardEncoder:
    """A Ray Data actor: loads the checkpoint once, then encodes whole shards (``store.encode_shard``)."""

    def __init__(self, checkpoint: str, payload: Any, batch_size: int, skip_bad: bool, length_sorted: bool) -> None:
        from .model import QueryLifeModel

        self.catalogue, self.shards, self.hashes = _resolve(payload)
        self.model = QueryLifeModel.from_pretrained(checkpoint)
        self.batch_size, self.skip_bad, self.length_sorted = batch_size, skip_bad, length_sorted

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .data.errors import BadRows, DataError
        from .store import ShardData, encode_shard

        out: dict[str, list[Any]] = {"piece": [], "data": [], "rows": [], "with_image": [], "bad_rows": [],
                                     "error": []}
        for k in batch["piece"]:
            # A fresh tally per shard: what this shard skipped goes back to the driver with it.
            self.catalogue.bad_rows = BadRows() if self.skip_bad else None
            try:
                shard = encode_shard(self.model, self.catalogue, self.shards[int(k)], self.hashes,
                                     batch_size=self.batch_size, skip_bad=self.skip_bad,
                                     length_sorted=self.length_sorted)
                error = ""
            except DataError as err:  # sent back as data: the driver raises it as itself, in shard order
                shard = ShardData(b"", 0, 0)
                error = json.dumps({"message": err.detail, "file": err.file, "row": err.row, "field": err.field,
                                    "line": err.line})
            bad = self.catalogue.bad_rows
            out["piece"].append(int(k))
            out["data"].append(shard.data)
            out["rows"].append(shard.rows)
            out["with_image"].append(shard.with_image)
            out["bad_rows"].append(json.dumps({"counts": dict(bad.counts), "examples": bad.examples} if bad else {}))
            out["error"].append(error)
        objects = ("data", "bad_rows", "error")
        return {key: np.array(values, dtype=object if key in objects else np.int64) for key, values in out.items()}


def _merge_bad_rows(catalogue: Catalogue, tally: dict[str, Any]) -> None:
    from .data.errors import BadRows

    if not tally.get("counts"):
        return
    if catalogue.bad_rows is None:
        catalogue.bad_rows = BadRows()
    shown: dict[str, int] = {}
    for ex in tally["examples"]:
        shown[ex["reason"]] = shown.get(ex["reason"], 0) + 1
        catalogue.bad_rows.add(ex["reason"], file=ex["file"], row=ex["row"], field=ex["field"], message=ex["message"])
    for reason, n in tally["counts"].items():  # beyond the examples kept: counted only
        for _ in range(n - shown.get(reason, 0)):
            catalogue.bad_rows.add(reason)


def embed_catalogue_ray(checkpoint: str | Path, catalogue: Catalogue, out: str | Path, options: RayOptions, *,
                        batch_size: int = 256, skip_bad: bool = False, length_sorted: bool = True,
                        **kwargs: Any) -> EmbedResult:
    """``embed_catalogue`` with the shards encoded on Ray actors; the same store, byte for byte.

    The driver reads the catalogue, hashes the inputs, decides which shards to (re)make, and writes each shard and
    the manifest as the shards come back in order; actors load the checkpoint themselves, so the checkpoint and the
    image files must be at the same paths on every node (shared storage), as must ``out`` for the driver.

    Args:
        options: where to run (:class:`RayOptions`); kwargs: the rest of :func:`~querylife.store.embed_catalogue`
            (``update``, ``shard_size``, ``model``, ``progress``, ``log``).

    Raises:
        RayJobError: Ray is not installed, or bad options; else what ``embed_catalogue`` raises.
    """
    from .store import ShardData, embed_catalogue

    options.check()
    ckpt = str(Path(checkpoint).resolve())

    def run(shards: list[np.ndarray], hashes: list[str]) -> Iterator[ShardData]:
        if not shards:
            return
        with ray_session(options) as ray:
            # Catalogue and hashes go into the object store once; each actor reads them from there.
            payload = ray.put((catalogue, shards, hashes))
            for row in _ordered_map(ray, len(shards), _ShardEncoder,
                                    {"checkpoint": ckpt, "payload": payload, "batch_size": batch_size,
                                     "skip_bad": skip_bad, "length_sorted": length_sorted}, options):
                _merge_bad_rows(catalogue, json.loads(row["bad_rows"]))
                if row["error"]:
                    from .data.errors import DataError

                    fields = json.loads(row["error"])
                    raise DataError(fields.pop("message"), **fields)
                yield ShardData(bytes(row["data"]), int(row["rows"]), int(row["with_image"]))

    return embed_catalogue(checkpoint, catalogue, out, batch_size=batch_size, skip_bad=skip_bad, shard_runner=run,
                           length_sorted=length_sorted, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# querylife genfilt describe --ray


class _BatchDescriber:
    """A Ray Data actor: makes its describer once (``factory``), then describes whole batches."""

    def __init__(self, factory: Callable[[], Describer], payload: Any, prompt: PromptTemplate) -> None:
        self.describer = factory()
        self.batches = _resolve(payload)
        self.prompt = prompt

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .genfilt.base import DescribeError

        pieces, answers = [], []
        for k in batch["piece"]:
            results = self.describer.describe_batch(self.batches[int(k)], self.prompt)
            # JSON, not pickles: texts stay texts, errors keep reason and message; anything else is left for the
            # driver to count as garbage, as it would be without Ray.
            answers.append(json.dumps([
                {"reason": r.reason, "message": r.message} if isinstance(r, DescribeError)
                else {"text": r} if isinstance(r, str) else {"type": type(r).__name__}
                for r in results
            ]))
            pieces.append(int(k))
        return {"piece": np.array(pieces, dtype=np.int64), "answers": np.array(answers, dtype=object)}


def _answer(record: dict[str, Any]) -> str | DescribeError | object:
    from .genfilt.base import DescribeError

    if "text" in record:
        return record["text"]
    if "reason" in record:
        return DescribeError(record["reason"], None if record["message"] == record["reason"] else record["message"])
    return type(record["type"], (), {})()  # an odd result: _as_error names its type, as without Ray


class RayDescriber:
    """A describer whose batches run on Ray actors, each with its own describer made by ``factory``.

    ``describe_catalog`` hands it all batches at once (``describe_batches``) and writes each batch's successes to
    the cache as it comes back, in order, so the cache gets the same records as a single-process run and a killed
    run resumes from the batches it had written. ``name`` must be the name the factory's describers have (it is
    the cache key).

    Example::

        describer = RayDescriber("openai:http://llm:8000/v1:qwen2-vl", lambda: make_describer(cfg), RayOptions())
        describe_catalog(items, describer, prompt, DescriptionCache("descriptions.jsonl"))
    """

    def __init__(self, name: str, factory: Callable[[], Describer], options: RayOptions) -> None:
        self.name = name
        self.factory = factory
        self.options = options.check()

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        return next(iter(self.describe_batches([list(items)], prompt)))  # type: ignore[return-value]

    def describe_batches(self, batches: list[list[ProductInput]], prompt: PromptTemplate
                         ) -> Iterator[list[str | DescribeError | object]]:
        """Each batch's results, in batch order, as they complete."""
        if not batches:
            return
        with ray_session(self.options) as ray:
            payload = ray.put(batches)
            for row in _ordered_map(ray, len(batches), _BatchDescriber,
                                    {"factory": self.factory, "payload": payload, "prompt": prompt}, self.options):
                yield [_answer(r) for r in json.loads(row["answers"])]
