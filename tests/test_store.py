"""The embedding store: round trip, resume, --update, one checkpoint per store, damaged files; the FAISS index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from store_helpers import make_checkpoint, small_catalog

from querylife.config import DataConfig
from querylife.encode import Catalogue, iter_product_batches, load_catalogue
from querylife.model import QueryLifeModel
from querylife.search import Searcher
from querylife.store import (
    MANIFEST_NAME,
    EmbeddingStore,
    StoredProducts,
    StoreError,
    checkpoint_hash,
    embed_catalogue,
)

faiss = pytest.importorskip("faiss")

from querylife.index import IndexConfig, ProductIndex, ProductIndexError, build_index, recall_at_k  # noqa: E402


@pytest.fixture(scope="module")
def catalog_file(tiny_store, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cat") / "catalog.parquet"
    small_catalog(tiny_store, 120).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tiny_text_model_dir, tmp_path_factory) -> Path:
    types = sorted(pd.read_parquet(tiny_store.catalog_path)["product_type"].unique())
    return make_checkpoint(tiny_text_model_dir, tmp_path_factory.mktemp("ckpt"), types)


@pytest.fixture(scope="module")
def model(checkpoint) -> QueryLifeModel:
    return QueryLifeModel.from_pretrained(checkpoint)


def _catalogue(path: Path) -> Catalogue:
    return load_catalogue(DataConfig(catalog=str(path)))


@pytest.fixture(scope="module")
def built(checkpoint, model, catalog_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "store"
    result = embed_catalogue(checkpoint, _catalogue(catalog_file), out, batch_size=16, shard_size=40, model=model,
                             progress=False, length_sorted=False)  # bit-identical to iter_product_batches in order
    assert (result.n_products, result.embedded, result.kept, result.shards) == (120, 120, 0, 3)
    return out


def _same(a: StoredProducts, b: StoredProducts) -> None:
    assert a.product_ids == b.product_ids
    assert a.titles == b.titles and a.product_types == b.product_types
    for name in ("t", "v", "has_image", "type_ids", "index_vectors"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_store_round_trip(built, model, catalog_file, checkpoint):
    store = EmbeddingStore.open(built)
    m = store.manifest
    assert m["status"] == "complete" and m["checkpoint"]["sha256"] == checkpoint_hash(checkpoint)
    assert m["embed_dim"] == 16 and m["index_dim"] == 16 and m["counts"]["products"] == 120
    assert [e["rows"] for e in m["shards"]] == [48, 48, 24]  # shard size rounded up to whole batches
    assert m["machine"]["cpu_count"] and m["querylife_version"] and m["checkpoint"]["config"]["embed_dim"] == 16
    loaded = store.load()
    expect = StoredProducts.concat([b.products for b in iter_product_batches(model, _catalogue(catalog_file),
                                                                             batch_size=16)])
    _same(loaded, expect)
    assert bool(loaded.has_image.any())
    assert sorted(p.name for p in (built / "shards").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]


def test_length_sorted_embed_writes_catalogue_order_and_the_same_vectors(built, model, catalog_file, checkpoint,
                                                                          tmp_path):
    cat = _catalogue(catalog_file)
    rows = np.arange(40, dtype=np.int64)
    batches = list(iter_product_batches(model, cat, rows, batch_size=16, length_sorted=True))
    tok = model.text_tower.tokenizer
    lengths = [len(tok(cat.texts[r], truncation=True, max_length=model.text_tower.max_length)["input_ids"])
               for b in batches for r in b.rows]
    assert lengths == sorted(lengths, reverse=True) and sorted(np.concatenate([b.rows for b in batches])) == list(rows)
    embed_catalogue(checkpoint, cat, tmp_path / "sorted", batch_size=16, shard_size=40, model=model, progress=False)
    got, expect = EmbeddingStore.open(tmp_path / "sorted").load(), EmbeddingStore.open(built).load()
    assert got.product_ids == expect.product_ids and got.titles == expect.titles
    assert torch.equal(got.has_image, expect.has_image) and torch.equal(got.type_ids, expect.type_ids)
    for name in ("t", "v", "index_vectors"):  # padding differs per batch: float rounding only
        torch.testing.assert_close(getattr(got, name), getattr(expect, name), atol=2e-6, rtol=0)


def test_refuses_another_checkpoint(built, tiny_text_model_dir, catalog_file, tmp_path, checkpoint):
    other = make_checkpoint(tiny_text_model_dir, tmp_path / "other", json.loads(
        (checkpoint / "config.json").read_text())["product_types"], seed=1)
    for update in (False, True):
        with pytest.raises(StoreError) as err:
            embed_catalogue(other, _catalogue(catalog_file), built, update=update, progress=False)
        assert checkpoint_hash(other) in str(err.value) and checkpoint_hash(checkpoint) in str(err.value)


def test_finished_store_needs_update_and_unknown_dirs_are_refused(built, checkpoint, catalog_file, tmp_path, model):
    with pytest.raises(StoreError, match="--update"):
        embed_catalogue(checkpoint, _catalogue(catalog_file), built, model=model, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("x")
    with pytest.raises(StoreError, match="not an embedding store"):
        embed_catalogue(checkpoint, _catalogue(catalog_file), tmp_path / "busy", model=model, progress=False)


def test_update_adds_changes_and_removes(built, checkpoint, model, catalog_file, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    before = EmbeddingStore.open(store).load()
    cat = pd.read_parquet(catalog_file)
    removed = cat["product_id"].iloc[[0, 50, 119]].tolist()
    cat = cat[~cat["product_id"].isin(removed)].reset_index(drop=True)
    cat.loc[5, "title"] = cat.loc[5, "title"] + " Deluxe"  # changed text
    img_row = int(np.flatnonzero(cat["image_path"].notna().to_numpy())[10])
    new_img = tmp_path / "new.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(new_img)
    changed_image_id = cat.loc[img_row, "product_id"]
    cat.loc[img_row, "image_path"] = str(new_img)  # changed image
    added = cat.iloc[[1, 2]].copy()
    added["product_id"] = ["new-1", "new-2"]
    cat = pd.concat([cat, added], ignore_index=True)
    path = tmp_path / "catalog.parquet"
    cat.to_parquet(path)

    result = embed_catalogue(checkpoint, _catalogue(path), store, update=True, batch_size=16, shard_size=40,
                             model=model, progress=False)
    assert (result.embedded, result.dropped, result.kept) == (4, 5, 115)
    after = EmbeddingStore.open(store).load()
    assert sorted(after.product_ids) == sorted(cat["product_id"])
    # Every product now has the vectors a fresh embedding of the new catalogue gives; untouched ones were kept.
    fresh = StoredProducts.concat([b.products for b in iter_product_batches(model, _catalogue(path), batch_size=16)])
    rows_after, rows_fresh = after.rows(cat["product_id"]), fresh.rows(cat["product_id"])
    for name in ("t", "v", "index_vectors"):
        torch.testing.assert_close(getattr(after, name)[rows_after], getattr(fresh, name)[rows_fresh], atol=2e-6,
                                   rtol=0)
    kept = [p for p in before.product_ids if p in set(cat["product_id"]) and p != changed_image_id
            and p != cat.loc[5, "product_id"]]
    assert torch.equal(after.t[after.rows(kept)], before.t[before.rows(kept)])
    assert not torch.equal(after.v[after.rows([changed_image_id])], before.v[before.rows([changed_image_id])])
    # No file outside the manifest remains; a second update has nothing to do.
    listed = {e["file"] for e in EmbeddingStore.open(store).manifest["shards"]}
    assert {f"shards/{p.name}" for p in (store / "shards").iterdir()} == listed
    again = embed_catalogue(checkpoint, _catalogue(path), store, update=True, model=model, progress=False)
    assert (again.embedded, again.dropped) == (0, 0)


def test_resume_keeps_complete_shards_and_redoes_the_rest(built, checkpoint, model, catalog_file, tmp_path):
    """In-process form of the kill -9 test (the subprocess one is in test_cli_store.py): an unfinished manifest
    with one complete shard, an orphan shard file and a temporary file, as a killed run leaves them."""
    store = tmp_path / "store"
    shutil.copytree(built, store)
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    manifest["status"] = "incomplete"
    manifest["next_shard"] = 1
    (store / "shards" / "part-00002.parquet").unlink()
    (store / "shards" / ".part-00002.parquet.x.tmp").write_bytes(b"half")  # killed while writing
    first = manifest["shards"][0]
    manifest["shards"] = [first]
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))  # part-00001 exists but is not listed
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.open(store).load()
    result = embed_catalogue(checkpoint, _catalogue(catalog_file), store, batch_size=16, shard_size=40, model=model,
                             progress=False, length_sorted=False)  # as `built` was written
    assert result.resumed and (result.kept, result.embedded) == (48, 72)
    _same(EmbeddingStore.open(store).load(), EmbeddingStore.open(built).load())
    assert sorted(p.name for p in (store / "shards").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "manifest"])
def test_damaged_store_errors_name_the_file(built, tmp_path, damage):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    shard = store / "shards" / "part-00001.parquet"
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "missing":
        shard.unlink()
    else:
        (store / MANIFEST_NAME).write_text('{"format": "querylife-embedding-store", "format_ver')
    with pytest.raises(StoreError) as err:
        EmbeddingStore.open(store).load()
    assert (MANIFEST_NAME if damage == "manifest" else "part-00001.parquet") in str(err.value)
    if damage == "truncate":  # without the checksum, pyarrow's own checks still catch a truncated file
        with pytest.raises(StoreError, match="part-00001"):
            EmbeddingStore.open(store).load(verify=False)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# index


def test_flat_index_is_exact_and_searcher_matches_exhaustive(built, model, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    build = build_index(store, IndexConfig())
    assert build.kind == "flat" and build.recall == 1.0
    info = json.loads((store / "index.json").read_text())
    assert info["recall"]["recall"] == 1.0 and info["kind"] == "flat" and info["n"] == 120
    products = EmbeddingStore.open(store).load()
    index = ProductIndex.load(store)
    q = products.index_vectors[:3].numpy()
    scores, rows = index.search(q, 5)
    expect = (products.index_vectors[:3] @ products.index_vectors.T).topk(5)
    np.testing.assert_allclose(scores, expect.values.numpy(), atol=1e-5)
    with_index = Searcher(model, products, index).search("red dress", k=5, candidates=len(products))
    exhaustive = Searcher(model, products).search("red dress", k=5)
    assert [h.product_id for h in with_index] == [h.product_id for h in exhaustive]
    assert [h.score for h in with_index] == pytest.approx([h.score for h in exhaustive], abs=1e-6)
    assert all(np.isfinite(h.retrieval_score) for h in with_index)


def test_ivf_recall_against_exact(built, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    g = torch.Generator().manual_seed(0)
    n, d = 4000, 16
    vecs = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    products = StoredProducts([f"p{i}" for i in range(n)], [""] * n, [""] * n, vecs, vecs,
                              torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long), vecs)
    low = build_index(store, IndexConfig(exact_threshold=1000, nlist=64, nprobe=2, recall_k=10), products=products)
    assert low.kind == "ivf" and low.params == {"nlist": 64, "nprobe": 2}
    assert 0.2 < low.recall < 1.0
    full = build_index(store, IndexConfig(kind="ivf", nlist=64, nprobe=64, recall_k=10), products=products)
    assert full.recall == pytest.approx(1.0)
    hnsw = build_index(store, IndexConfig(kind="hnsw", recall_k=10), products=products)
    assert hnsw.kind == "hnsw" and hnsw.recall > 0.9
    assert json.loads((store / "index.json").read_text())["recall"]["recall"] == hnsw.recall
    assert len(list(store.glob("index-*.faiss"))) == 1  # earlier builds removed
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)


def test_index_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="nlsit"):
        IndexConfig.model_validate({"nlsit": 4})


def test_stale_or_missing_index_is_refused(built, checkpoint, model, catalog_file, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(built, store)
    with pytest.raises(ProductIndexError, match="querylife index"):
        ProductIndex.load(store)
    build_index(store)
    cat = pd.read_parquet(catalog_file).iloc[:-1]
    path = tmp_path / "catalog.parquet"
    cat.to_parquet(path)
    embed_catalogue(checkpoint, _catalogue(path), store, update=True, model=model, progress=False)
    with pytest.raises(ProductIndexError, match="rebuild"):
        ProductIndex.load(store)


def test_unreadable_image_names_row_and_product_or_is_skipped(checkpoint, model, catalog_file, tmp_path):
    from querylife.data.errors import DataError

    cat = pd.read_parquet(catalog_file)
    row = int(np.flatnonzero(cat["image_path"].notna().to_numpy())[7])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    cat.loc[row, "image_path"] = str(bad)
    path = tmp_path / "catalog.parquet"
    cat.to_parquet(path)
    with pytest.raises(DataError) as err:
        embed_catalogue(checkpoint, _catalogue(path), tmp_path / "s1", batch_size=16, model=model, progress=False)
    text = str(err.value)
    assert str(bad) in text and f"row {row + 1}" in text and cat.loc[row, "product_id"] in text, text
    catalogue = load_catalogue(DataConfig(catalog=str(path), skip_bad_rows=True))
    embed_catalogue(checkpoint, catalogue, tmp_path / "s2", batch_size=16, skip_bad=True, model=model,
                    progress=False)
    products = EmbeddingStore.open(tmp_path / "s2").load()
    r = products.rows([cat.loc[row, "product_id"]])[0]
    assert not bool(products.has_image[r]) and float(products.v[r].abs().sum()) == 0.0
    assert catalogue.bad_rows is not None and catalogue.bad_rows.total == 1
    example = catalogue.bad_rows.examples[0]
    assert example["row"] == row + 1 and cat.loc[row, "product_id"] in example["message"], example


def test_store_of_another_image_size_is_not_updated(built, checkpoint, model, catalog_file, tmp_path):
    # A store written when photos were decoded at another size than the model's (querylife before the decode size
    # followed the tower) must not gain rows computed from other pixels.
    out = tmp_path / "store"
    shutil.copytree(built, out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["image_size"] == 32
    manifest["image_size"] = 64
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="decoded at 64 px.*at 32 px"):
        embed_catalogue(checkpoint, _catalogue(catalog_file), out, update=True, model=model, progress=False)


def test_two_writers_are_refused(checkpoint, model, catalog_file, tmp_path):
    import fcntl

    out = tmp_path / "store"
    out.mkdir()
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running embed holds it
        with pytest.raises(StoreError, match="another `querylife embed`"):
            embed_catalogue(checkpoint, _catalogue(catalog_file), out, model=model, progress=False)
    result = embed_catalogue(checkpoint, _catalogue(catalog_file), out, model=model, progress=False)
    assert result.n_products == 120
