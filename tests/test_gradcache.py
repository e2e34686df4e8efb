"""The gradient-cache step (querylife.gradcache) equals the plain training step: loss, every gradient, the weights
after the optimiser step; sub-batch splits; RNG replay; configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from querylife.config import ConfigError, with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.gradcache import GradCacheStep, RngState, sub_batches
from querylife.train import StepOutput, Trainer, TrainStep

# float32 sums in another order (sub-batch by sub-batch): agreement to ~1e-6 relative, checked at 1e-5 / 1e-6.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)


def flag_some(queries: list[str], cols: np.ndarray) -> torch.Tensor:
    """A deterministic stand-in false-negative judge: flags about one cell in five."""
    return torch.from_numpy((np.arange(len(queries))[:, None] * 3 + cols[None, :]) % 5 == 0)  # (B, Bp)


def one_step(cfg, data, tmp_path, name, *, chunk: int, train_mode: bool, judge=None):
    trainer = Trainer(cfg, data, tmp_path / name, progress=False, negative_mask_fn=judge)
    if chunk:
        trainer.step = GradCacheStep.from_step(trainer.step, chunk)
    trainer.model.train(train_mode)
    outs = [trainer.training_step(next(trainer.batches.epoch(0)))]
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in trainer.model.named_buffers()}
    return outs, grads, params, buffers


def assert_same(plain, cached, *, exact_buffers: bool = True):
    (o1, g1, p1, b1), (o2, g2, p2, b2) = plain, cached
    for a, b in zip(o1, o2, strict=True):
        assert b.total == pytest.approx(a.total, rel=RTOL)
        assert b.terms == pytest.approx(a.terms, rel=RTOL)
        assert (b.rows, b.columns, b.masked_negatives, b.extra_positives) == (
            a.rows,
            a.columns,
            a.masked_negatives,
            a.extra_positives,
        )
        assert b.logit_scale == pytest.approx(a.logit_scale, rel=RTOL)
    assert g1.keys() == g2.keys() and len(g1) > 5
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=RTOL, atol=ATOL, msg=f"gradient of {name}")
    # AdamW's first update is lr * g / (|g| + eps): about lr * sign(g), so a gradient within float noise of zero may
    # move its weight either way. Where |g| is well above the noise the weights must agree; elsewhere within 2 lr.
    lr = 1e-3 * 30  # the largest learning rate in these configs (gate scalars: lr x gate_lr_multiplier)
    for name in p1:
        grad = g1.get(name)
        clear = torch.ones_like(p1[name], dtype=torch.bool) if grad is None else grad.abs() > 1e-4
        torch.testing.assert_close(p2[name][clear], p1[name][clear], rtol=RTOL, atol=ATOL, msg=f"parameter {name}")
        assert (p2[name] - p1[name]).abs().max() <= 2 * lr + ATOL, f"parameter {name}"
    if exact_buffers:
        for name in b1:
            torch.testing.assert_close(b2[name], b1[name], rtol=RTOL, atol=ATOL, msg=f"buffer {name}")


def test_sub_batches_cover_the_batch_once():
    parts = sub_batches(10, 23, 4)  # 4 does not divide 10
    assert [(p.queries.start, p.queries.stop) for p in parts] == [(0, 4), (4, 8), (8, 10)]
    prods = [(p.products.start, p.products.stop) for p in parts]
    assert prods[0][0] == 0 and prods[-1][1] == 23  # all columns, in order, each once
    assert all(a[1] == b[0] for a, b in zip(prods[:-1], prods[1:], strict=True))
    assert all(stop > start for start, stop in prods)  # none empty
    one = sub_batches(10, 10, 64)  # chunk >= batch: one sub-batch
    assert len(one) == 1 and (one[0].queries, one[0].products) == (slice(0, 10), slice(0, 10))
    assert len(sub_batches(9, 9, 1)) == 9


@pytest.mark.parametrize("bad", [-1, 0, 2.5, "8", True])
def test_bad_chunks_are_errors(bad):
    with pytest.raises(ValueError, match="grad_cache_chunk must be a whole number >= 1"):
        sub_batches(8, 8, bad)


def test_bad_chunk_in_the_config_names_the_key(tiny_config):
    with pytest.raises((ConfigError, ValueError), match="grad_cache_chunk"):
        with_overrides(tiny_config, {"train.grad_cache_chunk": -4})
    with pytest.raises((ConfigError, ValueError), match="grad_cache_chunk"):
        with_overrides(tiny_config, {"train.grad_cache_chunk": "big"})


@pytest.mark.parametrize("chunk", [5, 16, 64])  # does not divide 16; == batch; > batch
def test_equals_the_plain_step_with_a_trained_cnn_hard_negatives_and_a_judge(tiny_config, tiny_data, tmp_path, chunk):
    # Eval mode: batch norm on its running statistics, so that each sample's embedding does not depend on its
    # sub-batch (training-mode batch norm sees sub-batch statistics, by design; see the next tests). The CNN,
    # the heads, the gate and the temperature are trained all the same.
    cfg = with_overrides(
        tiny_config,
        {
            "train.hard_negatives": 2,
            "train.false_negative_action": "positive",
            "train.gate_start_fraction": 0.0,  # the gate learns from the first step
            "train.grad_clip": 0.5,
        },
    )
    plain = one_step(cfg, tiny_data, tmp_path, "plain", chunk=0, train_mode=False, judge=flag_some)
    cached = one_step(cfg, tiny_data, tmp_path, "cached", chunk=chunk, train_mode=False, judge=flag_some)
    assert plain[0][0].extra_positives > 0 and plain[0][0].columns > plain[0][0].rows
    assert "fusion.type_logit" in plain[1] and "log_logit_scale" in plain[1]  # the loss's own parameters
    assert any(n.startswith("vision_tower.") for n in plain[1])  # the trained CNN
    assert_same(plain, cached)


def test_equals_the_plain_step_with_a_trained_text_tower_and_the_sigmoid_loss(tiny_config, tiny_data, tmp_path):
    cfg = with_overrides(
        tiny_config,
        {"model.tower.train_text_layers": -1, "loss.kind": "sigmoid", "train.false_negative_action": "drop"},
    )
    plain = one_step(cfg, tiny_data, tmp_path, "plain", chunk=0, train_mode=False, judge=flag_some)
    cached = one_step(cfg, tiny_data, tmp_path, "cached", chunk=3, train_mode=False, judge=flag_some)
    assert any(n.startswith("text_tower.") for n in plain[1]) and "logit_bias" in plain[1]
    assert plain[0][0].masked_negatives > 0
    assert_same(plain, cached)


def test_dropout_replays_in_the_recompute(tiny_config, tiny_data, tmp_path):
    # Training mode with dropout in the text tower and the CNN, batch norm on batch statistics: one sub-batch
    # (chunk >= batch) must reproduce the plain step, which needs the same dropout masks in the recompute as in the
    # graph-free pass and batch norm's running statistics updated once.
    cfg = with_overrides(tiny_config, {"model.tower.train_text_layers": -1, "model.tower.small_cnn.dropout": 0.5})
    plain = one_step(cfg, tiny_data, tmp_path, "plain", chunk=0, train_mode=True)
    cached = one_step(cfg, tiny_data, tmp_path, "cached", chunk=64, train_mode=True)
    assert any("running_mean" in n for n in plain[3])
    assert_same(plain, cached)


def test_rng_state_replays_and_the_generator_moves_on_once():
    torch.manual_seed(0)
    state = RngState(torch.device("cpu"))
    first = torch.rand(4)
    after = torch.get_rng_state()
    with state.replay():
        again = torch.rand(4)
    assert torch.equal(first, again) and torch.equal(torch.get_rng_state(), after)


def test_sub_batch_batch_norm_statistics_are_updated_once_per_sub_batch(tiny_config, tiny_data, tmp_path):
    # Training-mode batch norm with chunk < batch: each sub-batch normalises with its own statistics (not the
    # plain step, by design); the graph-free pass's running-statistics update is rolled back, so the momentum update
    # happens once per sub-batch, from the recompute.
    trainer = Trainer(tiny_config, tiny_data, tmp_path / "run", progress=False)
    trainer.step = GradCacheStep.from_step(trainer.step, 4)
    trainer.model.train()
    bn = next(m for m in trainer.model.vision_tower.modules() if isinstance(m, torch.nn.BatchNorm2d))
    trainer.training_step(next(trainer.batches.epoch(0)))
    assert int(bn.num_batches_tracked) == 4  # batch 16 in 4 sub-batches, not 8


def test_the_trainer_picks_the_step_from_the_config(tiny_config, tiny_data, tmp_path):
    plain = Trainer(tiny_config, tiny_data, tmp_path / "plain", progress=False)
    assert type(plain.step) is TrainStep
    cfg = with_overrides(tiny_config, {"train.grad_cache_chunk": 6})
    trainer = Trainer(cfg, tiny_data, tmp_path / "cached", progress=False)
    assert isinstance(trainer.step, GradCacheStep) and trainer.step.chunk == 6
    out = trainer.training_step(next(trainer.batches.epoch(0)))
    assert isinstance(out, StepOutput) and out.step == 0 and np.isfinite(out.total)


def test_several_processes_are_refused(tiny_config, tiny_data, tmp_path, monkeypatch):
    import torch.distributed as dist

    trainer = Trainer(tiny_config, tiny_data, tmp_path / "run", progress=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="does not combine with multi-process training"):
        GradCacheStep.from_step(trainer.step, 8)
