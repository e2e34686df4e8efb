"""The TorchScript query encoder the service uses by default: the same vectors as ``model.encode_queries``."""

from __future__ import annotations

import pytest
import torch

from querylife.model import ModelConfig, QueryLifeModel
from querylife.towers import SmallCNNConfig, TowerConfig
from querylife.traced_query import TracedQueryEncoder, TraceError

QUERIES = [
    "red dress",
    "usb c cable 2m black",
    "a",
    " ".join(["striped cotton summer dress"] * 20),  # longer than max_length: truncated alike
]


def _model(text_dir, *, separate: bool, pooling: str = "mean") -> QueryLifeModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        tower=TowerConfig(text_model=str(text_dir), vision_model="small_cnn",
                          small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32),
                          pooling=pooling),
        embed_dim=16,
        product_types=["dress", "charger"],
        separate_query_projection=separate,
    )
    return QueryLifeModel(cfg).eval()


@pytest.mark.parametrize(("separate", "pooling", "optimize"),
                         [(True, "mean", True), (False, "cls", True), (True, "mean", False)])
def test_traced_encoder_equals_encode_queries(tiny_text_model_dir, separate, pooling, optimize):
    model = _model(tiny_text_model_dir, separate=separate, pooling=pooling)
    encoder = TracedQueryEncoder(model, optimize=optimize)
    assert encoder.max_abs_diff <= 1e-5 and model.training is False
    with torch.no_grad():
        for batch in ([QUERIES[0]], QUERIES, QUERIES[::-1], [QUERIES[2]] * 3):  # one, padded batches, repeats
            got = encoder(batch)
            ref = model.encode_queries(batch)
            assert got.shape == (len(batch), 16) and got.dtype == torch.float32
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert encoder([]).shape == (0, 16)
    if not optimize:  # frozen only: the eager kernels, so the same bits
        with torch.no_grad():
            assert torch.equal(encoder(QUERIES), model.encode_queries(QUERIES))


def test_a_failed_trace_is_a_trace_error(tiny_text_model_dir, monkeypatch):
    model = _model(tiny_text_model_dir, separate=True)

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with pytest.raises(TraceError, match="cannot trace the query tower .*unsupported op"):
        TracedQueryEncoder(model)


def test_a_trace_that_differs_is_refused(tiny_text_model_dir, monkeypatch):
    model = _model(tiny_text_model_dir, separate=True)
    real = TracedQueryEncoder.encode
    monkeypatch.setattr(TracedQueryEncoder, "encode", lambda self, texts: real(self, texts) + 1e-3)
    with pytest.raises(TraceError, match="differs from eager PyTorch by 0.001"):
        TracedQueryEncoder(model)
