"""``embed --ray`` and ``genfilt describe --ray``: the same store and cache as one process, resumable; clear errors.

The Ray tests share one local Ray instance (2 CPUs) for the module: starting Ray takes several seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from store_helpers import make_checkpoint, small_catalog
from typer.testing import CliRunner

from querylife.cli import app
from querylife.config import DataConfig
from querylife.data.errors import DataError
from querylife.encode import load_catalogue
from querylife.genfilt.base import DescribeError, ProductInput, PromptTemplate
from querylife.genfilt.cache import DescriptionCache
from querylife.genfilt.describe import describe_catalog
from querylife.ray_jobs import INSTALL_HINT, RayDescriber, RayJobError, RayOptions, embed_catalogue_ray, require_ray
from querylife.store import MANIFEST_NAME, EmbeddingStore, ShardData, embed_catalogue

runner = CliRunner()


# ----------------------------------------------------------------------------------------------------------
# Fast: no Ray started


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    with pytest.raises(RayJobError, match=r'pip install "querylife\[ray\]"'):
        require_ray()
    result = runner.invoke(app, ["embed", "--checkpoint", "ckpt", "--catalog", "c.parquet", "--out", "s", "--ray"])
    assert result.exit_code == 2 and INSTALL_HINT in result.output, result.output
    result = runner.invoke(app, ["genfilt", "describe", "--catalog", "c.parquet", "--ray"])
    assert result.exit_code == 2 and INSTALL_HINT in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray-workers", "2"], "need --ray"),
        (["--ray-address", "auto"], "need --ray"),
        (["--ray", "--ray-workers", "0"], "--ray-workers must be >= 1"),
        (["--ray", "--ray-address", "http://head"], "give auto, ray://HOST:PORT or HOST:PORT"),
    ],
)
def test_ray_options_are_checked_before_any_work(args, message):
    result = runner.invoke(app, ["embed", "--checkpoint", "missing", "--catalog", "missing.parquet", "--out", "s",
                                 *args])
    assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["genfilt", "describe", "--catalog", "missing.parquet", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_ray_options_accept_the_documented_addresses():
    for address in (None, "auto", "ray://head.example:10001", "10.0.0.5:6379"):
        assert RayOptions(address=address, workers=3).check().address == address
    with pytest.raises(RayJobError, match="cpus_per_worker"):
        RayOptions(cpus_per_worker=0).check()


# ----------------------------------------------------------------------------------------------------------
# On a local Ray instance


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    # Describers defined in this module travel to the workers by value (the workers cannot import test modules).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tiny_store, tiny_text_model_dir, tmp_path_factory) -> Path:
    types = sorted(pd.read_parquet(tiny_store.catalog_path)["product_type"].unique())
    return make_checkpoint(tiny_text_model_dir, tmp_path_factory.mktemp("ckpt"), types)


@pytest.fixture(scope="module")
def catalog_file(tiny_store, tmp_path_factory) -> Path:
    """120 products, one with an unreadable image (skipped with skip_bad, reported with its row)."""
    cat = small_catalog(tiny_store, 120)
    folder = tmp_path_factory.mktemp("cat")
    row = int(np.flatnonzero(cat["image_path"].notna().to_numpy())[7])
    (folder / "broken.png").write_bytes(b"not a png")
    cat.loc[row, "image_path"] = str(folder / "broken.png")
    cat.to_parquet(folder / "catalog.parquet")
    return folder / "catalog.parquet"


def _catalogue(path: Path):
    return load_catalogue(DataConfig(catalog=str(path), skip_bad_rows=True))


@pytest.fixture(scope="module")
def single(checkpoint, catalog_file, tmp_path_factory):
    """The single-process store (batch 16, shard size 40 rounded up to 48: 3 shards) and its bad-row report."""
    catalogue = _catalogue(catalog_file)
    out = tmp_path_factory.mktemp("single") / "store"
    embed_catalogue(checkpoint, catalogue, out, batch_size=16, shard_size=40, skip_bad=True, progress=False)
    return out, catalogue.bad_rows


def _same_store(a: Path, b: Path) -> None:
    ma, mb = (json.loads((p / MANIFEST_NAME).read_text()) for p in (a, b))
    for key in ("shards", "counts", "checkpoint", "embed_dim", "index_dim", "status", "text_fields", "next_shard"):
        assert ma[key] == mb[key], key  # shard files equal byte for byte: same sha256 per shard
    pa, pb = EmbeddingStore.open(a).load(), EmbeddingStore.open(b).load()
    assert pa.product_ids == pb.product_ids
    for name in ("t", "v", "has_image", "type_ids", "index_vectors"):
        assert torch.equal(getattr(pa, name), getattr(pb, name)), name


@pytest.mark.slow
def test_embed_on_ray_gives_the_single_process_store(ray_local, single, checkpoint, catalog_file, tmp_path):
    out, bad_rows = single
    catalogue = _catalogue(catalog_file)
    result = embed_catalogue_ray(checkpoint, catalogue, tmp_path / "store", RayOptions(workers=2), batch_size=16,
                                 shard_size=40, skip_bad=True, progress=False)
    assert (result.n_products, result.embedded, result.shards) == (120, 120, 3)
    _same_store(out, tmp_path / "store")
    # The image a worker could not read is reported by the driver as without Ray (row and product named).
    assert catalogue.bad_rows is not None and catalogue.bad_rows.counts == bad_rows.counts
    assert catalogue.bad_rows.examples == bad_rows.examples
    # Without skip_bad the worker's DataError reaches the caller as itself, naming the file, row and product.
    with pytest.raises(DataError) as err:
        embed_catalogue_ray(checkpoint, load_catalogue(DataConfig(catalog=str(catalog_file))), tmp_path / "s2",
                            RayOptions(workers=2), batch_size=16, shard_size=40, progress=False)
    example = bad_rows.examples[0]
    assert "broken.png" in str(err.value) and f"row {example['row']}" in str(err.value), str(err.value)
    assert type(err.value) is DataError


@pytest.mark.slow
def test_embed_on_ray_resumes_a_stopped_run(ray_local, single, checkpoint, catalog_file, tmp_path):
    """A run stopped after its first shard (as a kill leaves it: one listed shard, status incomplete) is finished
    on Ray into the same store; then the CLI's --ray --update finds nothing to do and `index` reads the store."""
    store = tmp_path / "store"

    def stop_after_one(shards, hashes):
        from querylife.model import QueryLifeModel
        from querylife.store import encode_shard

        model = QueryLifeModel.from_pretrained(checkpoint)
        yield encode_shard(model, catalogue, shards[0], hashes, batch_size=16, skip_bad=True)
        raise KeyboardInterrupt  # killed while the second shard was being encoded

    catalogue = _catalogue(catalog_file)
    with pytest.raises(KeyboardInterrupt):
        embed_catalogue(checkpoint, catalogue, store, batch_size=16, shard_size=40, skip_bad=True, progress=False,
                        shard_runner=stop_after_one)
    assert len(json.loads((store / MANIFEST_NAME).read_text())["shards"]) == 1
    result = embed_catalogue_ray(checkpoint, _catalogue(catalog_file), store, RayOptions(workers=2), batch_size=16,
                                 shard_size=40, skip_bad=True, progress=False)
    assert result.resumed and (result.kept, result.embedded) == (48, 72)
    _same_store(single[0], store)

    cmd = ["embed", "--checkpoint", str(checkpoint), "--catalog", str(catalog_file), "--out", str(store),
           "--batch-size", "16", "--shard-size", "40", "--set", "data.skip_bad_rows=true", "--update", "--quiet",
           "--ray", "--ray-workers", "2"]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 0 and "0 embedded, 120 kept" in result.output, result.output
    _same_store(single[0], store)
    if importlib.util.find_spec("faiss") is not None:
        result = runner.invoke(app, ["index", str(store)])
        assert result.exit_code == 0 and "over 120 products" in result.output, result.output


def test_shard_data_is_what_the_store_writes(checkpoint, catalog_file, tmp_path):
    """The per-shard entry point the Ray actors call writes exactly the single-process shard (no Ray needed)."""
    from querylife.encode import product_input_hashes
    from querylife.model import QueryLifeModel
    from querylife.store import encode_shard

    catalogue = _catalogue(catalog_file)
    model = QueryLifeModel.from_pretrained(checkpoint)
    shard = encode_shard(model, catalogue, np.arange(48, 96), product_input_hashes(catalogue), batch_size=16,
                         skip_bad=True)
    assert isinstance(shard, ShardData) and shard.rows == 48
    out = tmp_path / "store"
    embed_catalogue(checkpoint, _catalogue(catalog_file), out, batch_size=16, shard_size=40, skip_bad=True,
                    model=model, progress=False)
    assert (out / "shards" / "part-00001.parquet").read_bytes() == shard.data


# ----------------------------------------------------------------------------------------------------------
# genfilt describe on Ray


class ScriptedDescriber:
    """Deterministic describer: titles ending in 7 time out, the others get a description of their title."""

    name = "fake:ray"

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        return [DescribeError("timeout", "scripted") if item.title.endswith("7") else f"desc of {item.title}"
                for item in items]


def _items(n: int) -> list[ProductInput]:
    return [ProductInput(f"p{i}", f"title {i}", "shoe") for i in range(n)]


def _records(path: Path) -> set[tuple[str, ...]]:
    return {(r["product_id"], r["content_hash"], r["describer"], r["prompt_version"], r["text"])
            for r in DescriptionCache(path).items()}


@pytest.mark.slow
def test_describe_on_ray_gives_the_single_process_cache_and_resumes(ray_local, tmp_path):
    items, prompt = _items(50), PromptTemplate()
    one = describe_catalog(items, ScriptedDescriber(), prompt, DescriptionCache(tmp_path / "one.jsonl"),
                           batch_size=8, progress=False)
    ray_describer = RayDescriber(ScriptedDescriber.name, ScriptedDescriber, RayOptions(workers=2))
    # Stopped after 16 products (as a kill after two batches leaves the cache), then finished on Ray.
    part = describe_catalog(items, ScriptedDescriber(), prompt, DescriptionCache(tmp_path / "ray.jsonl"),
                            batch_size=8, progress=False, limit=16)
    assert part.pending == 34
    rest = describe_catalog(items, ray_describer, prompt, DescriptionCache(tmp_path / "ray.jsonl"), batch_size=8,
                            progress=False)
    assert _records(tmp_path / "ray.jsonl") == _records(tmp_path / "one.jsonl")
    assert rest.cached == 15 and rest.described + part.described == one.described
    assert one.failed == rest.failed == {"timeout": 5}  # p7 failed in the stopped run and is tried again
    # From scratch on Ray: the same records and counts as one process.
    fresh = describe_catalog(items, ray_describer, prompt, DescriptionCache(tmp_path / "fresh.jsonl"),
                             batch_size=8, progress=False)
    assert _records(tmp_path / "fresh.jsonl") == _records(tmp_path / "one.jsonl")
    assert (fresh.described, fresh.failed, fresh.cached) == (one.described, one.failed, one.cached)


@pytest.mark.slow
def test_cli_describe_on_ray_against_an_openai_server(ray_local, tmp_path):
    """`genfilt describe --ray`: actors make their own OpenAI describer from the config and call the server; the
    cache equals the single-process run's."""
    from test_genfilt_openai import FakeOpenAIServer

    pd.DataFrame({"product_id": [f"p{i}" for i in range(20)], "title": [f"title {i}" for i in range(20)],
                  "product_type": ["shoe"] * 20}).to_csv(tmp_path / "items.csv", index=False)
    with FakeOpenAIServer() as srv:
        base = ["genfilt", "describe", "--catalog", str(tmp_path / "items.csv"), "--set", f"genfilt.base_url={srv.url}",
                "--set", "genfilt.model=m", "--set", "genfilt.batch_size=4", "--quiet"]
        one = runner.invoke(app, [*base, "--cache", str(tmp_path / "one.jsonl")])
        assert one.exit_code == 0 and "described 20" in one.output, one.output
        on_ray = runner.invoke(app, [*base, "--cache", str(tmp_path / "ray.jsonl"), "--ray", "--ray-workers", "2"])
        assert on_ray.exit_code == 0 and "described 20" in on_ray.output, on_ray.output
    assert len(_records(tmp_path / "ray.jsonl")) == 20
    assert _records(tmp_path / "ray.jsonl") == _records(tmp_path / "one.jsonl")
