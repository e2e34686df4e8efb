"""Embedding store: every product's stored vectors, as serving and search read them.

Serving-time form of the fusion (docs/ARCHITECTURE.md): the title vector ``t`` and the image vector ``v`` of each
product are stored with its type and has-image flag; at query time the query is encoded once and the model's own
fusion (``QueryLifeModel.score``) is applied over the stored candidate rows in one batched operation. The
query-independent ``index_vectors`` (``Fusion.index_vectors``) feed the ANN index for retrieval.

On disk (``querylife embed``, :func:`embed_catalogue`)::

    STORE/manifest.json              checkpoint (content hash, path, config), dims, shard list, counts, machine
    STORE/shards/part-00000.parquet  product_id, title, product_type, input_hash, has_image, type_id, t, v, index

Each shard and the manifest are written atomically (temporary file + rename) and the manifest is rewritten after
every shard, so a run killed at any moment leaves complete shards that the next run keeps; ``input_hash`` (product
text, type, image path and bytes) tells ``--update`` which products changed. A store belongs to one checkpoint:
writing into it with another is refused.

Example::

    result = embed_catalogue("runs/exp1/best", load_catalogue(cfg.data), "store")
    products = EmbeddingStore.open("store").load()        # StoredProducts, validated
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from .encode import Catalogue
    from .model import QueryLifeModel

__all__ = [
    "EmbedResult",
    "EmbeddingStore",
    "ShardData",
    "ShardRunner",
    "StoreError",
    "StoredProducts",
    "checkpoint_hash",
    "embed_catalogue",
    "encode_shard",
]

MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
STORE_FORMAT = "querylife-embedding-store"
STORE_FORMAT_VERSION = 1
# Columns of every shard; the vectors are fixed-size lists of float32.
SHARD_COLUMNS = ("product_id", "title", "product_type", "input_hash", "has_image", "type_id", "t", "v", "index_vector")


class StoreError(ValueError):
    """An embedding store that cannot be used or written: corrupt or missing files, another checkpoint, ..."""


@dataclass
class StoredProducts:
    """Stored vectors of N products, row-aligned.

    ``type_ids`` are ids in the checkpoint's product-type vocabulary (``QueryLifeModel.type_ids``), so the gate
    sees exactly what it saw in evaluation.
    """

    product_ids: list[str]
    titles: list[str]
    product_types: list[str]
    t: torch.Tensor  # (N, D) float32, projected title vectors
    v: torch.Tensor  # (N, D) float32, projected image vectors (zeros where has_image is False)
    # (N,) bool: v is an image vector, the photo's or (model.fusion.missing_image="type_mean") its type's typical
    # one for a product without a photo; the manifest's with_image counts these
    has_image: torch.Tensor
    type_ids: torch.Tensor  # (N,) int64
    index_vectors: torch.Tensor  # (N, D') float32, query-independent fused vectors for the ANN index
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {pid: i for i, pid in enumerate(self.product_ids)}

    def __len__(self) -> int:
        return len(self.product_ids)

    def rows(self, product_ids) -> np.ndarray:
        """Row numbers of ``product_ids`` (KeyError naming the first unknown id)."""
        try:
            return np.fromiter((self.row_of[p] for p in product_ids), dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"product_id {err.args[0]!r} is not in the store") from None

    def select(self, rows) -> StoredProducts:
        """The products at ``rows`` (a new StoredProducts, row-aligned with ``rows``)."""
        rows = np.asarray(rows, dtype=np.int64)
        idx = torch.from_numpy(rows)
        return StoredProducts(
            product_ids=[self.product_ids[r] for r in rows], titles=[self.titles[r] for r in rows],
            product_types=[self.product_types[r] for r in rows], t=self.t[idx], v=self.v[idx],
            has_image=self.has_image[idx], type_ids=self.type_ids[idx], index_vectors=self.index_vectors[idx],
        )

    @staticmethod
    def concat(parts: list[StoredProducts]) -> StoredProducts:
        """Row-wise concatenation (the order of ``parts``)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return StoredProducts(
            product_ids=[p for part in parts for p in part.product_ids],
            titles=[p for part in parts for p in part.titles],
            product_types=[p for part in parts for p in part.product_types],
            t=torch.cat([p.t for p in parts]), v=torch.cat([p.v for p in parts]),
            has_image=torch.cat([p.has_image for p in parts]), type_ids=torch.cat([p.type_ids for p in parts]),
            index_vectors=torch.cat([p.index_vectors for p in parts]),
        )


# ----------------------------------------------------------------------------------------------------------
# Checkpoint identity


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 over a checkpoint's ``model.safetensors`` and ``config.json`` (names and bytes): the store's owner.

    Frozen pretrained towers are referenced by name in ``config.json`` (not copied), so the name is hashed.
    """
    from .model import CONFIG_NAME, WEIGHTS_NAME

    directory = Path(directory)
    h = hashlib.sha256()
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        path = directory / name
        if not path.is_file():
            raise StoreError(f"{directory} is not a querylife checkpoint: {name} is missing")
        h.update(name.encode() + b"\x00")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\x00")
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Shards


def _vector_column(x: torch.Tensor):
    import pyarrow as pa

    arr = x.detach().to(torch.float32).cpu().contiguous().numpy()  # (n, D)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), type=pa.float32()), arr.shape[1])


def _shard_bytes(products: StoredProducts, input_hashes: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "product_id": pa.array(products.product_ids, type=pa.string()),
        "title": pa.array(products.titles, type=pa.string()),
        "product_type": pa.array(products.product_types, type=pa.string()),
        "input_hash": pa.array(input_hashes, type=pa.string()),
        "has_image": pa.array(products.has_image.cpu().numpy().astype(bool)),
        "type_id": pa.array(products.type_ids.cpu().numpy().astype(np.int64)),
        "t": _vector_column(products.t),
        "v": _vector_column(products.v),
        "index_vector": _vector_column(products.index_vectors),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@dataclass
class ShardData:
    """One shard as it goes on disk: its Parquet bytes (``shards/part-NNNNN.parquet``) and the manifest's counts."""

    data: bytes
    rows: int
    with_image: int


# Encodes the shards of one run (catalogue rows of each shard; the input hash of every catalogue row) and yields
# them in the order given; ``embed_catalogue`` writes each as it arrives. The Ray runner is one (querylife.ray_jobs).
ShardRunner = Callable[[list[np.ndarray], list[str]], Iterable[ShardData]]


def encode_shard(model: QueryLifeModel, catalogue: Catalogue, rows: np.ndarray, input_hashes: list[str], *,
                 batch_size: int = 256, skip_bad: bool = False,
                 on_batch: Callable[[int], object] | None = None, length_sorted: bool = True) -> ShardData:
    """Encode catalogue ``rows`` into one shard (the per-shard step of ``embed``, in this process or a Ray worker).

    ``input_hashes``: one per catalogue row (:func:`~querylife.encode.product_input_hashes`); ``on_batch`` is called
    with each encoded batch's size (a progress bar); ``length_sorted`` encodes the shard's products longest text
    first (less padding per batch) and writes them back in the shard's own order. The same rows give the same
    bytes wherever this runs.

    Example::

        shard = encode_shard(model, catalogue, np.arange(100), product_input_hashes(catalogue), batch_size=50)
        shard.rows == 100
    """
    from .encode import iter_product_batches

    parts, done = [], []
    for batch in iter_product_batches(model, catalogue, rows, batch_size=batch_size, skip_bad=skip_bad,
                                      length_sorted=length_sorted):
        parts.append(batch.products)
        done.append(batch.rows)
        if on_batch is not None:
            on_batch(len(batch.rows))
    products = StoredProducts.concat(parts)
    if length_sorted and len(rows):  # back to the shard's own (catalogue) order
        got = np.concatenate(done)
        order = np.argsort(got)
        products = products.select(order[np.searchsorted(got, rows, sorter=order)])  # row i of rows, from got
    return ShardData(_shard_bytes(products, [input_hashes[r] for r in rows]), len(products),
                     int(products.has_image.sum()))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _vectors(table, name: str, dim: int, file: Path) -> torch.Tensor:
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) or col.type.list_size != dim:
        raise StoreError(f"{file}: column {name!r} is {col.type}, expected fixed_size_list<float>[{dim}]")
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return torch.from_numpy(flat.reshape(len(col), dim).copy())


def _read_shard(file: Path, entry: dict[str, Any], dims: tuple[int, int], verify: bool) -> tuple[StoredProducts,
                                                                                                 list[str]]:
    import pyarrow.parquet as pq

    if not file.is_file():
        raise StoreError(f"{file}: shard listed in the manifest is missing (the store is damaged: re-run "
                         "`querylife embed` into a new --out)")
    if verify and _sha256_file(file) != entry.get("sha256"):
        raise StoreError(f"{file}: shard content does not match the manifest's sha256 (corrupt or modified); "
                         "re-run `querylife embed` into a new --out")
    try:
        table = pq.read_table(file)
    except Exception as err:  # pyarrow raises several types for a damaged file; all mean unreadable
        raise StoreError(f"{file}: cannot read shard: {type(err).__name__}: {err}") from None
    missing = [c for c in SHARD_COLUMNS if c not in table.column_names]
    if missing:
        raise StoreError(f"{file}: shard lacks columns {missing}")
    if table.num_rows != entry.get("rows"):
        raise StoreError(f"{file}: shard has {table.num_rows} rows, the manifest says {entry.get('rows')}")
    d, d_index = dims
    products = StoredProducts(
        product_ids=table.column("product_id").to_pylist(),
        titles=table.column("title").to_pylist(),
        product_types=table.column("product_type").to_pylist(),
        t=_vectors(table, "t", d, file),
        v=_vectors(table, "v", d, file),
        has_image=torch.from_numpy(table.column("has_image").to_numpy(zero_copy_only=False).astype(bool)),
        type_ids=torch.from_numpy(table.column("type_id").to_numpy().astype(np.int64)),
        index_vectors=_vectors(table, "index_vector", d_index, file),
    )
    return products, table.column("input_hash").to_pylist()


def _read_keys(file: Path) -> tuple[list[str], list[str]]:
    """(product_id, input_hash) of a shard, reading only those two columns."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file, columns=["product_id", "input_hash"])
    except Exception as err:
        raise StoreError(f"{file}: cannot read shard: {type(err).__name__}: {err}") from None
    return table.column("product_id").to_pylist(), table.column("input_hash").to_pylist()


# ----------------------------------------------------------------------------------------------------------
# The store


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST_NAME
    if not file.is_file():
        raise StoreError(f"{path} is not an embedding store: {MANIFEST_NAME} is missing (make one with "
                         "`querylife embed --checkpoint DIR --catalog FILE --out STORE`)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{file}: not valid JSON ({err}); the store is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise StoreError(f"{file}: not a querylife embedding store manifest (format {STORE_FORMAT!r} expected)")
    if manifest.get("format_version") != STORE_FORMAT_VERSION:
        raise StoreError(f"{file}: store format version {manifest.get('format_version')}, this querylife reads "
                         f"version {STORE_FORMAT_VERSION}: re-run `querylife embed` into a new --out")
    for key in ("checkpoint", "embed_dim", "index_dim", "shards", "status"):
        if key not in manifest:
            raise StoreError(f"{file}: the manifest lacks {key!r}")
    return manifest


class EmbeddingStore:
    """A store directory written by :func:`embed_catalogue` (``querylife embed``).

    Example::

        store = EmbeddingStore.open("store")
        store.manifest["checkpoint"]["sha256"], store.manifest["counts"]["products"]
        products = store.load()     # StoredProducts in shard order (the ANN index's row order)
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingStore:
        """Read and check the manifest (StoreError naming the file when it is missing or damaged)."""
        path = Path(path)
        return cls(path, _read_manifest(path))

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def checkpoint_sha256(self) -> str:
        return self.manifest["checkpoint"]["sha256"]

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.manifest["checkpoint"]["path"])

    def shard_files(self) -> list[Path]:
        return [self.path / e["file"] for e in self.manifest["shards"]]

    def fingerprint(self) -> str:
        """A hash of the checkpoint and the shard list (files and their sha256): changes whenever the rows do."""
        h = hashlib.sha256(self.checkpoint_sha256.encode())
        for e in self.manifest["shards"]:
            h.update(f"{e['file']}:{e['rows']}:{e['sha256']}".encode())
        return h.hexdigest()

    def load(self, *, verify: bool = True) -> StoredProducts:
        """All stored products (shard order), checked against the manifest.

        ``verify``: also compare each shard's SHA-256 with the manifest (reads every byte twice).

        Raises:
            StoreError: an unfinished store, a missing, modified or unreadable shard, wrong columns or dimensions,
                row counts that differ from the manifest, or a product id stored twice; each names the file.
        """
        if not self.complete:
            raise StoreError(f"{self.path}: the store is incomplete (an embed run was interrupted or is running); "
                             "re-run the same `querylife embed` command to finish it")
        dims = (int(self.manifest["embed_dim"]), int(self.manifest["index_dim"]))
        parts = [_read_shard(self.path / e["file"], e, dims, verify)[0] for e in self.manifest["shards"]]
        if not parts:
            return _empty(*dims)
        products = StoredProducts.concat(parts)
        if len(products.row_of) != len(products):
            seen: set[str] = set()
            dup = next(p for p in products.product_ids if p in seen or seen.add(p))  # type: ignore[func-returns-value]
            raise StoreError(f"{self.path}: product_id {dup!r} is stored twice; the store is damaged")
        expected = self.manifest.get("counts", {}).get("products")
        if expected is not None and expected != len(products):
            raise StoreError(f"{self.path / MANIFEST_NAME}: says {expected} products, the shards hold {len(products)}")
        return products


def _empty(d: int, d_index: int) -> StoredProducts:
    return StoredProducts([], [], [], torch.zeros(0, d), torch.zeros(0, d), torch.zeros(0, dtype=torch.bool),
                          torch.zeros(0, dtype=torch.long), torch.zeros(0, d_index))


# ----------------------------------------------------------------------------------------------------------
# Writing


@dataclass
class EmbedResult:
    """What an ``embed`` run did: products embedded now, kept from earlier runs, dropped (removed or changed)."""

    path: Path
    n_products: int
    embedded: int
    kept: int
    dropped: int
    shards: int
    seconds: float
    resumed: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "resumed: " if self.resumed else ""
        return (f"{verb}{self.n_products} products in {self.shards} shards at {self.path}: {self.embedded} embedded, "
                f"{self.kept} kept, {self.dropped} dropped ({self.seconds:.1f} s)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Writer:
    """The manifest of a store being written; every change is saved atomically before the next step."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.m = manifest

    def save(self) -> None:
        shards = self.m["shards"]
        self.m["counts"] = {"products": sum(e["rows"] for e in shards), "shards": len(shards),
                            "with_image": sum(e.get("with_image", 0) for e in shards)}
        self.m["updated"] = _now()
        atomic_write_text(self.path / MANIFEST_NAME, json.dumps(self.m, indent=2, default=str) + "\n")

    def new_name(self) -> str:
        n = int(self.m.get("next_shard", 0))
        self.m["next_shard"] = n + 1
        return f"{SHARDS_DIR}/part-{n:05d}.parquet"

    def write_shard(self, products: StoredProducts, hashes: list[str]) -> dict[str, Any]:
        return self.write_data(ShardData(_shard_bytes(products, hashes), len(products),
                                         int(products.has_image.sum())))

    def write_data(self, shard: ShardData) -> dict[str, Any]:
        name = self.new_name()
        atomic_write_bytes(self.path / name, shard.data)
        return {"file": name, "rows": shard.rows, "with_image": shard.with_image,
                "sha256": hashlib.sha256(shard.data).hexdigest()}


def _check_owner(path: Path, manifest: dict[str, Any], sha: str, checkpoint: Path) -> None:
    have = manifest["checkpoint"].get("sha256")
    if have != sha:
        raise StoreError(
            f"{path} holds vectors of checkpoint {have} ({manifest['checkpoint'].get('path')}), not of {sha} "
            f"({checkpoint}): vectors of two checkpoints cannot be mixed; embed into a new --out")


def embed_catalogue(
    checkpoint: str | Path,
    catalogue: Catalogue,
    out: str | Path,
    *,
    update: bool = False,
    batch_size: int = 256,
    shard_size: int = 10_000,
    skip_bad: bool = False,
    model: QueryLifeModel | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    shard_runner: ShardRunner | None = None,
    length_sorted: bool = True,
) -> EmbedResult:
    """Embed ``catalogue`` with the checkpoint into the store ``out`` (``querylife embed``).

    A new store is written shard by shard. An unfinished store of the same checkpoint is resumed: its complete
    shards are kept, the rest is embedded, with the same shard boundaries and vectors as an uninterrupted run.
    ``update``: bring a finished store up to date with ``catalogue``: only new products and products whose input
    (text, type, image path and bytes) changed are embedded; removed and changed ones are dropped.

    Args:
        batch_size: products per encoder batch (images decoded per batch); shard_size: products per shard (a
            multiple of ``batch_size`` is rounded up to, so batches never straddle shards).
        skip_bad: an unreadable image leaves its product without an image instead of stopping the run.
        model: the checkpoint's model, when the caller already loaded it.
        shard_runner: encodes the shards elsewhere (e.g. on Ray workers, :mod:`querylife.ray_jobs`) and yields
            them in order; default: in this process, with :func:`encode_shard`.
        length_sorted: encode each shard's products longest text first (less padding per batch; written back in
            catalogue order). The vectors differ from unsorted batches by float rounding only.

    Raises:
        StoreError: ``out`` holds another checkpoint's vectors, or is a finished store and ``update`` is off, or is
            a non-empty directory that is not a store.
        DataError: an unreadable image (file, catalogue row, product) unless ``skip_bad``.
    """
    from . import __version__
    from .encode import image_size_of
    from .model import QueryLifeModel

    start = time.time()
    say = log or (lambda _line: None)
    checkpoint, out = Path(checkpoint), Path(out)
    sha = checkpoint_hash(checkpoint)
    if batch_size <= 0 or shard_size <= 0:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size} and {shard_size}")
    shard_size = -(-shard_size // batch_size) * batch_size
    model = model if model is not None else QueryLifeModel.from_pretrained(checkpoint)
    if not (out / MANIFEST_NAME).exists() and out.exists() and (
        not out.is_dir() or any(p.name != ".lock" for p in out.iterdir())
    ):
        raise StoreError(f"{out} exists and is not an embedding store (no {MANIFEST_NAME}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)  # held until this function returns (or the process dies: the kernel releases it)
    try:
        resumed = False
        if (out / MANIFEST_NAME).exists():
            manifest = _read_manifest(out)
            _check_owner(out, manifest, sha, checkpoint)
            size = image_size_of(model)
            if manifest.get("image_size", size) != size:
                # Stores written before image_size_of followed the tower (a Lite0 checkpoint's photos were decoded
                # at 64 px, not 224): new rows would be computed from other pixels than the stored ones.
                raise StoreError(
                    f"{out} holds vectors of photos decoded at {manifest['image_size']} px, and this querylife "
                    f"decodes this checkpoint's photos at {size} px, the size its vision tower was trained at: "
                    "vectors of the two cannot be mixed; embed into a new --out")
            if manifest["status"] == "complete" and not update:
                raise StoreError(f"{out} already holds a finished store of this checkpoint "
                                 f"({manifest.get('counts', {}).get('products')} products): use --update to bring "
                                 "it up to date with the catalogue, or choose another --out")
            resumed = manifest["status"] != "complete"
            if resumed:
                say(f"resuming the unfinished store {out} ({len(manifest['shards'])} complete shards)")
        else:
            config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
            with torch.no_grad():  # the index vectors' width, from the fusion itself
                z = torch.zeros(1, model.config.embed_dim, device=model.device)
                probe = model.fusion.index_vectors(z, z, model.type_ids(["x"]), torch.zeros(1, dtype=torch.bool))
            manifest = {
                "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "status": "incomplete",
                "checkpoint": {"sha256": sha, "path": str(checkpoint.resolve()), "config": config},
                "embed_dim": model.config.embed_dim, "index_dim": int(probe.shape[-1]),
                "fusion": model.config.fusion.mode, "image_size": image_size_of(model),
                "text_fields": list(catalogue.text_fields), "shards": [], "next_shard": 0,
                "querylife_version": __version__, "created": _now(),
            }
        return _embed_locked(out, manifest, resumed, checkpoint, catalogue, model, update=update,
                             batch_size=batch_size, shard_size=shard_size, skip_bad=skip_bad, progress=progress,
                             say=say, start=start, shard_runner=shard_runner, length_sorted=length_sorted)
    finally:
        lock.close()


def _lock(out: Path):
    """An exclusive lock on ``out/.lock``: two embed runs writing one store would corrupt it."""
    fh = open(out / ".lock", "a+")  # noqa: SIM115 - closed by the caller
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not POSIX: no lock
        pass
    except OSError:
        fh.close()
        raise StoreError(f"{out} is being written by another `querylife embed` (it holds {out / '.lock'})") from None
    return fh


def _embed_locked(out: Path, manifest: dict[str, Any], resumed: bool, checkpoint: Path, catalogue: Catalogue,
                  model: QueryLifeModel, *, update: bool, batch_size: int, shard_size: int, skip_bad: bool,
                  progress: bool, say: Callable[[str], None], start: float,
                  shard_runner: ShardRunner | None = None, length_sorted: bool = True) -> EmbedResult:
    from tqdm.auto import tqdm

    from . import __version__
    from .encode import product_input_hashes
    from .runinfo import machine_info

    writer = _Writer(out, manifest)
    manifest["status"] = "incomplete"
    manifest["source"] = {"catalogue": catalogue.source, "products": len(catalogue)}
    manifest["machine"] = machine_info(["pyarrow"])
    manifest["querylife_version"] = __version__
    if list(catalogue.text_fields) != manifest.get("text_fields"):
        say(f"note: text fields {list(catalogue.text_fields)} differ from the store's {manifest.get('text_fields')}: "
            "products whose text changed are embedded again")
        manifest["text_fields"] = list(catalogue.text_fields)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    writer.save()

    # Files a killed run left: temporary shards, or a shard renamed into place before the manifest named it.
    listed = {e["file"] for e in manifest["shards"]}
    for f in (out / SHARDS_DIR).iterdir():
        if f"{SHARDS_DIR}/{f.name}" not in listed:
            f.unlink()

    hashes = product_input_hashes(catalogue)
    wanted = dict(zip(catalogue.product_ids, hashes, strict=True))
    kept: set[str] = set()
    dropped = 0
    for entry in list(manifest["shards"]):
        file = out / entry["file"]
        ids, old = _read_keys(file)
        keep = [wanted.get(p) == h for p, h in zip(ids, old, strict=True)]
        if all(keep):
            kept.update(ids)
            continue
        dropped += keep.count(False)
        rows = np.flatnonzero(keep)
        pos = manifest["shards"].index(entry)
        if len(rows):
            products, old_hashes = _read_shard(file, entry, (manifest["embed_dim"], manifest["index_dim"]), False)
            manifest["shards"][pos] = writer.write_shard(products.select(rows), [old_hashes[r] for r in rows])
            kept.update(products.product_ids[r] for r in rows)
        else:
            del manifest["shards"][pos]
        writer.save()
        file.unlink()

    todo = np.array([r for r, p in enumerate(catalogue.product_ids) if p not in kept], dtype=np.int64)
    say(f"{len(kept)} products kept, {len(todo)} to embed, {dropped} dropped")
    bar = tqdm(total=len(todo), desc="embedding", unit="product", disable=not progress, smoothing=0.1)
    shards = [todo[s : s + shard_size] for s in range(0, len(todo), shard_size)]
    try:
        if shard_runner is None:
            encoded: Iterable[ShardData] = (
                encode_shard(model, catalogue, rows, hashes, batch_size=batch_size, skip_bad=skip_bad,
                             on_batch=bar.update, length_sorted=length_sorted) for rows in shards)
        else:
            encoded = shard_runner(shards, hashes)
        # Shards are written in order, each with its manifest entry, so a kill leaves the same prefix of shards
        # wherever they were encoded, and a resumed run continues with the same boundaries.
        for shard in encoded:
            manifest["shards"].append(writer.write_data(shard))
            writer.save()
            if shard_runner is not None:
                bar.update(shard.rows)
    finally:
        bar.close()
    manifest["status"] = "complete"
    seconds = time.time() - start
    manifest["last_run"] = {"embedded": int(len(todo)), "kept": len(kept), "dropped": dropped,
                            "seconds": round(seconds, 2), "resumed": resumed, "update": update, "date": _now()}
    writer.save()
    return EmbedResult(out, manifest["counts"]["products"], int(len(todo)), len(kept), dropped,
                       len(manifest["shards"]), seconds, resumed)
