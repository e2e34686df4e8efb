"""The trainer's parts: the batches of an epoch, the gate hold, and one typed training step."""

import numpy as np
import pytest
import torch

from querylife.batches import EpochBatches, epoch_batches
from querylife.config import with_overrides
from querylife.data.prepare import prepare_dataset
from querylife.schedule import GateHold
from querylife.train import StepOutput, Trainer


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)


def test_epoch_batches_are_a_function_of_data_config_seed_and_epoch(tiny_config, tiny_data, tmp_path):
    cfg = with_overrides(tiny_config, {"train.hard_negatives": 2})
    first = list(epoch_batches(tiny_data, cfg, 1))
    again = list(epoch_batches(tiny_data, cfg, 1))
    assert [b.index for b in first] == [b.index for b in again]
    assert all(np.array_equal(a.product_rows, b.product_rows) for a, b in zip(first, again, strict=True))
    assert [b.index for b in epoch_batches(tiny_data, cfg, 0)] != [b.index for b in first]
    assert [b.index for b in epoch_batches(tiny_data, cfg, 1, seed=5)] != [b.index for b in first]
    tail = list(epoch_batches(tiny_data, cfg, 1, start_step=2))  # a resumed epoch: the same batches from step 2
    assert [(b.step, b.index) for b in tail] == [(b.step, b.index) for b in first[2:]]
    assert all(np.array_equal(a.product_rows, b.product_rows) for a, b in zip(tail, first[2:], strict=True))
    # The trainer trains on exactly these.
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", progress=False)
    mine = list(trainer.batches.epoch(1))
    assert [b.index for b in mine] == [b.index for b in first] and len(trainer.batches) == len(trainer.sampler)
    b = first[0]
    ids = tiny_data.catalog["product_id"].astype(str).to_numpy()
    assert b.product_ids == list(ids[b.product_rows]) and b.positive_ids == b.product_ids[: b.size]
    assert len(b.product_rows) > b.size  # hard negatives follow the positives
    assert b.queries == [trainer.queries[i] for i in b.index]


def test_an_empty_train_split_is_an_error(tiny_config, tiny_data):
    train = tiny_data.splits["train"]
    data = tiny_data.__class__(**{**tiny_data.__dict__, "splits": {**tiny_data.splits, "train": train.iloc[:0]}})
    with pytest.raises(ValueError, match="no positive pairs"):
        EpochBatches.from_config(data, tiny_config)


def test_gate_hold_holds_the_gate_groups_only():
    hold = GateHold.from_fraction(0.5, total_steps=10)
    assert hold.start_step == 5 and hold.is_held(4) and not hold.is_held(5)
    gate, weight = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([{"params": [weight], "name": "decay"}, {"params": [gate], "name": "gate"}], lr=1.0)
    factors = hold.lr_factors(opt, total_steps=10, warmup_fraction=0.0)
    assert [f(4) for f in factors] == [pytest.approx(factors[0](4)), 0.0]  # the gate: no learning rate while held
    assert factors[1](5) == pytest.approx(1.0)  # then its own cosine from the top
    assert hold.held_parameters(opt) == [gate]
    gate.grad, weight.grad = torch.ones(2), torch.ones(2, 2)
    hold.clear_gradients(opt, 4)
    assert gate.grad is None and weight.grad is not None
    gate.grad = torch.ones(2)
    hold.clear_gradients(opt, 5)
    assert gate.grad is not None
    never = GateHold.from_fraction(0.0, 10)
    assert not never.is_held(0) and all(f(0) > 0 for f in never.lr_factors(opt, 10, 0.0))  # no hold: all learn


def test_training_step_returns_the_typed_loss_parts(tiny_config, tiny_data, tmp_path):
    cfg = with_overrides(tiny_config, {"train.hard_negatives": 1, "train.epochs": 2})
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", progress=False)
    batch = next(trainer.batches.epoch(0))
    before = trainer.model.fusion.type_logit.detach().clone()
    out = trainer.training_step(batch)
    assert isinstance(out, StepOutput) and out.step == 0 and trainer.state.global_step == 1
    assert set(out.terms) == {"query_fused", "query_title", "query_image", "title_image"}
    weights = {"query_fused": 1.0, "query_title": 0.25, "query_image": 0.25, "title_image": 0.25}
    assert out.total == pytest.approx(sum(weights[k] * v for k, v in out.terms.items()), rel=1e-5)
    assert (out.rows, out.columns) == (batch.size, len(batch.product_rows))
    ignore = trainer.negative_mask(batch.index, batch.product_rows)
    assert out.masked_negatives == int(ignore.sum() - ignore.diagonal().sum()) and out.extra_positives == 0
    assert out.gate_held and torch.equal(trainer.model.fusion.type_logit.detach(), before)  # held: not moved
    assert out.temperature == pytest.approx(1 / out.logit_scale) and out.model_seconds > 0
    off = Trainer(with_overrides(cfg, {"loss.query_image": 0.0}), tiny_data, tmp_path / "off", progress=False)
    assert off.training_step(batch).query_image is None  # a term that is off is not computed


def test_hand_steps_are_the_fit_steps(tiny_config, tiny_data, tmp_path):
    cfg = with_overrides(tiny_config, {"train.epochs": 1, "train.patience": 0})
    by_hand = Trainer(cfg, tiny_data, tmp_path / "hand", progress=False)
    losses = [by_hand.training_step(b).total for b in by_hand.batches.epoch(0)]
    fitted = Trainer(cfg, tiny_data, tmp_path / "fit", progress=False).fit()
    assert fitted.history[0]["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    from querylife.model import QueryLifeModel

    last = QueryLifeModel.from_pretrained(tmp_path / "fit" / "last").state_dict()
    mine = by_hand.model.state_dict()
    assert all(torch.equal(last[k], mine[k].cpu()) for k in last)
