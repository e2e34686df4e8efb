"""Per-modality query heads outside training: eval's scores, the dev type-weight fit, the embedding store's index
width, ANN retrieval with [q_t; q_v], the Searcher, the traced and ONNX query encoders, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from store_helpers import small_catalog

from querylife.config import DataConfig
from querylife.data.prepare import prepare_dataset
from querylife.encode import load_catalogue
from querylife.gate_fit import pair_parts
from querylife.model import ModelConfig, QueryLifeModel
from querylife.scoring import FeatureCache, score_pairs
from querylife.search import Searcher
from querylife.store import EmbeddingStore, embed_catalogue
from querylife.towers import SmallCNNConfig, TowerConfig

faiss = pytest.importorskip("faiss")

from querylife.index import IndexConfig, ProductIndex, build_index  # noqa: E402


def _model(text_dir: Path, types: list[str], mode: str = "query_type_gate", seed: int = 0) -> QueryLifeModel:
    """A tiny per-modality model whose gate depends on type and query and whose two query heads differ."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        tower=TowerConfig(text_model=str(text_dir), small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32)),
        embed_dim=16,
        product_types=sorted(types),
        fusion={"mode": mode},
        query_heads="per_modality",
    )
    model = QueryLifeModel(cfg)
    with torch.no_grad():
        for p in model.fusion.parameters():
            p.normal_(0.0, 0.5)
        model.query_image_proj.weight.add_(0.3 * torch.randn_like(model.query_image_proj.weight))
    return model.eval()


@pytest.fixture(scope="module")
def dataset(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False,
                           split_by="intent")


@pytest.fixture(scope="module")
def checkpoint(dataset, tiny_text_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heads_ckpt") / "best"
    _model(tiny_text_model_dir, dataset.product_types).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(checkpoint) -> QueryLifeModel:
    return QueryLifeModel.from_pretrained(checkpoint)


def test_store_index_and_search(checkpoint, model, dataset, tiny_store, tmp_path):
    cat_path = tmp_path / "catalog.parquet"
    small_catalog(tiny_store, 120).to_parquet(cat_path)
    store = tmp_path / "store"
    embed_catalogue(checkpoint, load_catalogue(DataConfig(catalog=str(cat_path))), store, batch_size=16,
                    shard_size=40, model=model, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    assert (manifest["embed_dim"], manifest["index_dim"]) == (16, 32)
    assert manifest["checkpoint"]["config"]["query_heads"] == "per_modality"
    build = build_index(store, IndexConfig())
    assert build.recall == 1.0
    products = EmbeddingStore.open(store).load()
    assert products.t.shape == (120, 16) and products.index_vectors.shape == (120, 32)
    index = ProductIndex.load(store)
    q = model.encode_queries(["red striped dress"]).detach()  # (1, 32)
    hits = Searcher(model, products, index).search("red striped dress", k=5, candidates=len(products))
    exhaustive = Searcher(model, products).search("red striped dress", k=5)
    assert [h.product_id for h in hits] == [h.product_id for h in exhaustive]
    assert [h.score for h in hits] == pytest.approx([h.score for h in exhaustive], abs=1e-6)
    # the ANN score is q . index vector: the fused score with the type-only part of the gate
    rows = [h.row for h in hits]
    expect = (q @ products.index_vectors[rows].T)[0].numpy()
    np.testing.assert_allclose([h.retrieval_score for h in hits], expect, atol=1e-5)
    z = torch.zeros_like(model.fusion.gate_out.weight)
    with torch.no_grad():
        saved = model.fusion.gate_out.weight.clone(), model.fusion.gate_out.bias.clone()
        model.fusion.gate_out.weight.copy_(z)
        model.fusion.gate_out.bias.zero_()
        type_only = Searcher(model, products).relevance(q[0], rows).scores
        model.fusion.gate_out.weight.copy_(saved[0])
        model.fusion.gate_out.bias.copy_(saved[1])
    np.testing.assert_allclose(type_only, expect, atol=1e-5)


def test_searcher_relevance_equals_eval_scores(model, dataset):
    from querylife.encode import Catalogue, iter_product_batches
    from querylife.store import StoredProducts

    parts = [b.products for b in iter_product_batches(model, Catalogue.from_frame(dataset.catalog), batch_size=64)]
    searcher = Searcher(model, StoredProducts.concat(parts))
    test = dataset.splits["test"]
    query = test["query"].iloc[0]
    pairs = test[test["query"] == query]
    ref = score_pairs(model, dataset, pairs)
    got = searcher.relevance_ids(query, pairs["product_id"].tolist())
    np.testing.assert_allclose(got.scores, ref.score, atol=1e-5)
    np.testing.assert_allclose(got.image_weight, ref.image_weight, atol=1e-5)


def test_dev_type_weight_parts_equal_the_model_scores(dataset, tiny_text_model_dir):
    model = _model(tiny_text_model_dir, dataset.product_types, mode="dev_type_gate")
    dev = dataset.splits["dev"]
    cache = FeatureCache()
    parts = pair_parts(model, dataset, dev, cache)
    assert torch.all(parts.stv == 0)
    got = parts.scores(model, torch.sigmoid(model.fusion.type_logit.detach()))
    np.testing.assert_allclose(got, score_pairs(model, dataset, dev, cache).score, atol=1e-5)


def test_traced_and_onnx_query_encoders_give_both_halves(model, checkpoint):
    from querylife.onnx_export import OnnxQueryEncoder, export_query_encoder, quiet_export
    from querylife.traced_query import TracedQueryEncoder

    queries = ["red dress", "usb c cable 2m black", "a"]
    ref = model.encode_queries(queries).detach()  # (3, 32)
    traced = TracedQueryEncoder(model)  # raises when the trace differs from eager
    assert traced(queries).shape == (3, 32) and traced([]).shape == (0, 32)
    torch.testing.assert_close(traced(queries), ref, atol=1e-5, rtol=0)
    pytest.importorskip("onnxruntime")
    with quiet_export():
        result = export_query_encoder(checkpoint, checkpoint / "onnx" / "query_encoder.onnx", exporter="legacy")
    assert result.embed_dim == 32
    encoder = OnnxQueryEncoder(result.path)
    assert encoder.dim == 32 and encoder([]).shape == (0, 32)
    torch.testing.assert_close(encoder(queries), ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_cli_train_eval_embed_index_search(tiny_store, tiny_text_model_dir, tmp_path):
    from test_cli import cli, show, tiny_overrides

    run = tmp_path / "run"
    heads = ["--set", "model.query_heads=per_modality"]
    proc = cli("train", "--catalog", tiny_store.catalog_path, "--pairs", tiny_store.pairs_path, "--out", run,
               *tiny_overrides(tiny_text_model_dir, epochs=2), *heads, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert json.loads((run / "best" / "config.json").read_text())["query_heads"] == "per_modality"
    out = tmp_path / "eval"
    proc = cli("eval", "--checkpoint", run / "best", "--catalog", tiny_store.catalog_path, "--pairs",
               tiny_store.pairs_path, "--out", out, *tiny_overrides(tiny_text_model_dir), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    report = json.loads((out / "report.json").read_text())
    assert np.isfinite(report["results"]["run"]["overall"]["ndcg@10"]), report["results"]["run"]
    store = tmp_path / "store"
    proc = cli("embed", "--checkpoint", run / "best", "--catalog", tiny_store.catalog_path, "--out", store,
               "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    proc = cli("index", store, cwd=tmp_path)
    assert proc.returncode == 0 and "dim 32" in proc.stdout, show(proc)
    proc = cli("search", store, "red striped dress", "--k", "3", cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert [ln.split()[0] for ln in lines] == ["1", "2", "3"], show(proc)
