"""Distributed training: N gloo ranks on CPU equal one process on the combined batch (loss, gradients, parameters
after a step), masks apply across ranks, `querylife train --nproc 2` writes a checkpoint, and a 2-rank run resumes
where it stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from querylife.distributed import Shard, backend_for, launch_command, shard_batch

TOL = 1e-5  # float32 sums in another order (the gathered column layout): equal to ~1e-7 in practice


def test_shards_split_rows_and_their_hard_negatives():
    # 5 rows, hard negatives 1, 0, 2, 1, 1 -> global columns 0..4 positives, 5..9 negatives in row order.
    counts = [1, 0, 2, 1, 1]
    s0, s1 = (shard_batch(counts, 2, r) for r in range(2))
    assert s0.rows.tolist() == [0, 1, 2] and s1.rows.tolist() == [3, 4]  # contiguous, sizes differ by <= 1
    assert s0.cols.tolist() == [0, 1, 2, 5, 6, 7] and s1.cols.tolist() == [3, 4, 8, 9]
    assert (s0.rows_max, s0.cols_max) == (3, 6)
    assert s1.gathered_rows.tolist() == [0, 1, 2, 3, 4, -1]  # rank 1 padded by one row
    assert s1.gathered_cols.tolist() == [0, 1, 2, 5, 6, 7, 3, 4, 8, 9, -1, -1]
    assert s1.padded_rows.tolist() == [3, 4, 0] and s1.padded_cols.tolist() == [3, 4, 8, 9, 0, 0]
    # Every global row and column on exactly one rank: no positive twice across ranks.
    assert sorted(np.concatenate([s0.cols, s1.cols]).tolist()) == list(range(10))
    few = shard_batch([0], 3, 2)  # fewer rows than ranks: a rank may get none (it still runs, all padding)
    assert isinstance(few, Shard) and len(few.rows) == 0 and few.padded_rows.tolist() == [0]


def test_backend_follows_the_device_unless_overridden(monkeypatch):
    monkeypatch.delenv("QUERYLIFE_DIST_BACKEND", raising=False)
    assert backend_for("cpu") == "gloo" and backend_for("cuda") == "nccl"
    assert backend_for("cpu", "nccl") == "nccl"
    monkeypatch.setenv("QUERYLIFE_DIST_BACKEND", "gloo")
    assert backend_for("cuda") == "gloo"
    cmd = launch_command(2, ["--out", "runs/x"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[-4:] == ["-m", "querylife.train", "--out", "runs/x"]


class CrossRankJudge:
    """A deterministic false-negative judge: flags cell (i, j) when i + j is odd, so flagged columns sit on every
    rank."""

    name = "cross_rank"

    def __call__(self, queries: list[str], product_rows: np.ndarray) -> torch.Tensor:
        i = np.arange(len(queries))[:, None]
        j = np.arange(len(product_rows))[None, :]
        return torch.from_numpy((i + j) % 2 == 1)


CASES = {
    # infonce (symmetric), hard negatives, the judge's flags dropped; the first batch of epoch 0.
    "infonce": ({"train.hard_negatives": 1, "train.false_negative_judge": "guide"}, "drop", 0),
    # sigmoid, the judge's flags as extra positives, the gate trained from step 0; the epoch's last (smaller) batch.
    "sigmoid": (
        {
            "loss.kind": "sigmoid",
            "train.gate_start_fraction": 0.0,
            "train.hard_negatives": 2,
            "train.false_negative_judge": "guide",
            "train.false_negative_action": "positive",
        },
        "positive",
        -1,
    ),
    # infonce with extra positives and no hard negatives.
    "positive": ({"train.false_negative_judge": "guide", "train.false_negative_action": "positive"}, "positive", 0),
}
BASE = {"model.tower.train_vision_layers": 0, "train.batch_size": 8, "train.epochs": 1}  # frozen CNN: see SCALE.md


def _case_config(config_json: str, name: str, batch_size: int):
    from querylife.config import config_from_dict, with_overrides

    overrides = {**BASE, **CASES[name][0], "train.batch_size": batch_size}
    return with_overrides(config_from_dict(json.loads(config_json)), overrides)


def _one_step(config_json: str, catalog: str, pairs: str, run_dir: Path, world: int, rank: int) -> dict:
    """One training step of each case; what it returns is compared across ranks / processes."""
    from querylife.data.prepare import prepare_dataset
    from querylife.distributed import DistEnv
    from querylife.train import Trainer

    torch.set_num_threads(1)
    data = prepare_dataset(catalog, pairs, image_size=32, progress=False)
    env = DistEnv(rank, world) if world > 1 else None
    out = {}
    for name in CASES:
        cfg = _case_config(config_json, name, 8 if world > 1 else 16)  # 2 x 8 = 16 pairs a step either way
        trainer = Trainer(cfg, data, run_dir / name, progress=False, negative_mask_fn=CrossRankJudge(), dist=env)
        batches = list(trainer.batches.epoch(0))
        trainer.model.train()  # as fit does: the frozen CNN's batch norm in eval mode (per-row features)
        step = trainer.training_step(batches[CASES[name][2]])
        model = trainer.model
        out[name] = {
            "total": step.total,
            "terms": step.terms,
            "rows": step.rows,
            "masked": step.masked_negatives,
            "extra": step.extra_positives,
            "grads": {n: p.grad.tolist() for n, p in model.named_parameters() if p.grad is not None},
            "params": {n: p.detach().tolist() for n, p in model.named_parameters() if p.requires_grad},
        }
    return out


def _step_worker(rank: int, world: int, rendezvous: str, args: tuple) -> None:
    import torch.distributed as dist

    config_json, catalog, pairs, run_dir, out = args
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        result = _one_step(config_json, catalog, pairs, Path(run_dir) / f"rank{rank}", world, rank)
    finally:
        dist.destroy_process_group()
    Path(f"{out}.{rank}").write_text(json.dumps(result))


def _spawn(worker, world: int, tmp_path: Path, *args) -> None:
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, str(tmp_path / "rendezvous"), args), nprocs=world)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_combined_batch(tiny_config, tiny_store, tmp_path):
    config_json = json.dumps(tiny_config.model_dump(mode="json"))
    catalog, pairs = str(tiny_store.catalog_path), str(tiny_store.pairs_path)
    _spawn(_step_worker, 2, tmp_path, config_json, catalog, pairs, str(tmp_path / "ddp"), str(tmp_path / "out"))
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    single = _one_step(config_json, catalog, pairs, tmp_path / "single", 1, 0)

    def close(a, b) -> bool:
        return torch.allclose(torch.tensor(a), torch.tensor(b), atol=TOL, rtol=TOL)

    lr = json.loads(config_json)["train"]["lr"]

    def params_close(a, b, grad) -> bool:
        # AdamW's first step moves a weight by ~lr * g / (|g| + eps): where the gradient is ~0 its sign is float noise
        # (gradients equal above to 1e-5 can still differ in sign there), so those weights may land up to 2 lr
        # apart; everywhere else the weights after the step must agree.
        a, b = torch.tensor(a), torch.tensor(b)
        tiny = torch.zeros_like(a, dtype=torch.bool) if grad is None else torch.tensor(grad).abs() <= 2 * TOL
        diff = (a - b).abs()
        return bool((diff[~tiny] <= TOL + TOL * b.abs()[~tiny]).all() and (diff[tiny] <= 2 * lr + TOL).all())

    for name in CASES:
        ref = single[name]
        assert ref["extra"] > 0 or CASES[name][1] == "drop"
        for got in (r[name] for r in ranks):
            assert got["rows"] == ref["rows"] and got["masked"] == ref["masked"] and got["extra"] == ref["extra"]
            assert got["total"] == pytest.approx(ref["total"], rel=TOL), name
            assert got["terms"] == pytest.approx(ref["terms"], rel=TOL), name
            assert got["grads"].keys() == ref["grads"].keys(), name
            for key in ref["grads"]:
                assert close(got["grads"][key], ref["grads"][key]), (name, key)
            for key in ref["params"]:
                assert params_close(got["params"][key], ref["params"][key], ref["grads"].get(key)), (name, key)


def _toy_batch(seed: int = 0):
    from querylife.losses import BatchMasks, Embeddings

    g = torch.Generator().manual_seed(seed)
    counts = [1, 0, 2, 1, 1]  # 5 rows, 10 columns
    m, cg = len(counts), len(counts) + sum(counts)

    def unit(n):
        return torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)

    emb = Embeddings(
        unit(m), unit(cg), unit(cg), torch.randint(0, 2, (cg,), generator=g), torch.rand(cg, generator=g) > 0.3
    )
    ignore = torch.rand(m, cg, generator=g) > 0.8
    extra = (torch.rand(m, cg, generator=g) > 0.8) & ~ignore
    return counts, emb, BatchMasks(ignore=ignore, product_ignore=torch.eye(cg, dtype=torch.bool), extra_positive=extra)


def _ranks_loss(counts, emb, masks, cfg, fusion, world, monkeypatch) -> tuple[float, list[float]]:
    """The sharded loss of every rank of ``world``, the all-gather simulated in one process."""
    from querylife import distributed
    from querylife.losses import Embeddings

    shards = [shard_batch(counts, world, r) for r in range(world)]
    local = []
    for s in shards:
        r, c = torch.from_numpy(s.padded_rows), torch.from_numpy(s.padded_cols)
        local.append(Embeddings(emb.q[r], emb.t[c], emb.v[c], emb.type_ids[c], emb.has_image[c]))
    gathered = Embeddings(
        *(torch.cat([getattr(e, f) for e in local]) for f in ("q", "t", "v", "type_ids", "has_image"))
    )
    monkeypatch.setattr(distributed, "gather_shard", lambda e, s: gathered)
    scale, bias = torch.tensor(10.0), torch.tensor(-1.0)
    per_rank = [
        float(distributed.sharded_alignment_loss(e, s, masks, cfg, fusion, scale, bias)[0].detach())
        for e, s in zip(local, shards, strict=True)
    ]
    return sum(per_rank), per_rank


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("world", [2, 3, 6])  # 6 ranks for 5 rows: one rank holds only padding
def test_rank_shares_sum_to_the_single_process_loss(kind, world, monkeypatch):
    from querylife.fusion import Fusion, FusionConfig
    from querylife.losses import LossConfig, alignment_loss

    counts, emb, masks = _toy_batch()
    cfg, fusion = LossConfig(kind=kind), Fusion(FusionConfig(), 2, 4)
    ref = alignment_loss(emb, masks, cfg, fusion, torch.tensor(10.0), torch.tensor(-1.0))
    total, per_rank = _ranks_loss(counts, emb, masks, cfg, fusion, world, monkeypatch)
    assert total == pytest.approx(ref.parts["total"], rel=TOL)
    if world == 6:
        assert per_rank[5] == 0.0


def test_a_masked_column_on_another_ranks_product_is_ignored(monkeypatch):
    from dataclasses import replace

    from querylife.fusion import Fusion, FusionConfig
    from querylife.losses import LossConfig

    counts, emb, masks = _toy_batch()
    masks = replace(masks, ignore=torch.zeros_like(masks.ignore), extra_positive=None)
    cfg, fusion = LossConfig(symmetric=False), Fusion(FusionConfig(), 2, 4)
    _, plain = _ranks_loss(counts, emb, masks, cfg, fusion, 2, monkeypatch)
    ignore = masks.ignore.clone()
    ignore[0, 4] = True  # row 0 is on rank 0, column 4 (row 4's positive) on rank 1
    _, masked = _ranks_loss(counts, emb, replace(masks, ignore=ignore), cfg, fusion, 2, monkeypatch)
    assert masked[1] == plain[1] and masked[0] < plain[0]  # rank 0's row lost a negative; rank 1 is untouched


def _resume_worker(rank: int, world: int, rendezvous: str, args: tuple) -> None:
    import torch.distributed as dist

    from querylife.data.prepare import prepare_dataset
    from querylife.distributed import DistEnv
    from querylife.train import Trainer, TrainingInterrupted

    config_json, catalog, pairs, run_dir, out = args
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    from querylife.config import config_from_dict

    cfg = config_from_dict(json.loads(config_json))
    data = prepare_dataset(catalog, pairs, image_size=32, progress=False)
    env, root = DistEnv(rank, world), Path(run_dir)
    result: dict = {}
    try:
        full = Trainer(cfg, data, root / "full", progress=False, dist=env).fit()
        per_epoch = len(Trainer(cfg, data, root / "probe", progress=False, dist=env).batches)
        crash_at = per_epoch + 1 + (per_epoch % 2 == 0)  # odd: one step after a checkpoint, mid-way through epoch 2
        try:
            Trainer(cfg, data, root / "crash", progress=False, dist=env, max_steps=crash_at).fit()
        except TrainingInterrupted:
            result["interrupted_at"] = crash_at
        resumed = Trainer(cfg, data, root / "crash", progress=False, dist=env).fit(resume=True)
        result["steps_per_epoch"] = per_epoch
        for name, res in (("full", full), ("resumed", resumed)):
            result[name] = {k: v.tolist() for k, v in res.model.trainable_state_dict().items()}
            result[name + "_history"] = [h["dev_ndcg@10"] for h in res.history]
    finally:
        dist.destroy_process_group()
    Path(f"{out}.{rank}").write_text(json.dumps(result))


@pytest.mark.slow
def test_two_ranks_resume_where_they_stopped(tiny_config, tiny_store, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.save_every_steps": 2, "train.epochs": 2, "train.batch_size": 8})
    config_json = json.dumps(cfg.model_dump(mode="json"))
    catalog, pairs = str(tiny_store.catalog_path), str(tiny_store.pairs_path)
    _spawn(_resume_worker, 2, tmp_path, config_json, catalog, pairs, str(tmp_path / "runs"), str(tmp_path / "out"))
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    state = json.loads((tmp_path / "runs" / "crash" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and ranks[0]["interrupted_at"] > ranks[0]["steps_per_epoch"]
    for got in ranks:
        assert got["full"].keys() == got["resumed"].keys()
        for key in got["full"]:
            assert torch.allclose(torch.tensor(got["full"][key]), torch.tensor(got["resumed"][key]), atol=TOL), key
        assert got["resumed_history"] == pytest.approx(got["full_history"])
    assert ranks[0]["full_history"] == ranks[1]["full_history"]  # rank 0's dev score broadcast to every rank


@pytest.mark.slow
def test_querylife_train_nproc_2_writes_a_checkpoint(tiny_config, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.epochs": 1, "train.batch_size": 8})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "querylife.cli", "train", "--nproc", "2", "--config", str(config)]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run"), "--quiet"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 ranks (gloo); train.batch_size 8 per rank, global batch 16" in proc.stdout
    assert proc.stdout.count("best epoch 1") == 1  # rank 0 alone logs
    for name in ("model.safetensors", "summary.json", "calibrator.json"):
        assert (tmp_path / "run" / "best" / name).exists(), name
    summary = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "batch_size_per_rank": 8, "global_batch_size": 16}


def test_gather_shard_packs_and_unpacks_a_rank_exactly():
    from querylife.distributed import gather_shard

    _, emb, _ = _toy_batch()
    shard = shard_batch([0] * 5, 1, 0)  # one rank: the all-gather is the identity, the packing is what is tested
    emb = type(emb)(emb.q, emb.t[:5], emb.v[:5], emb.type_ids[:5] + 7, emb.has_image[:5])
    got = gather_shard(emb, shard)
    assert torch.equal(got.q, emb.q) and torch.equal(got.t, emb.t) and torch.equal(got.v, emb.v)
    assert torch.equal(got.type_ids, emb.type_ids) and torch.equal(got.has_image, emb.has_image)


def test_python_m_querylife_train_takes_the_options_of_querylife_train(capsys):
    from querylife.distributed import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--resume" in out and "--nproc" in out
