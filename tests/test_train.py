"""Training end to end on a tiny storefront: learning happens, checkpoints are complete, resume is exact."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from querylife.data.prepare import prepare_dataset
from querylife.model import QueryLifeModel
from querylife.scoring import score_pairs
from querylife.train import Trainer, TrainingInterrupted


def judged_trainer(cfg, data, run_dir, **kwargs) -> Trainer:
    """A Trainer with the judge the config names, built by the caller as the CLI and the suite do."""
    from querylife.genfilt.training import build_negative_mask_fn

    return Trainer(cfg, data, run_dir, negative_mask_fn=build_negative_mask_fn(cfg, data), progress=False, **kwargs)


@pytest.fixture(scope="module")
def tiny_data(tiny_store):
    return prepare_dataset(tiny_store.catalog_path, tiny_store.pairs_path, image_size=32, progress=False)


def test_fit_writes_best_and_last(tiny_config, tiny_data, tmp_path):
    result = Trainer(tiny_config, tiny_data, tmp_path / "run", progress=False).fit()
    assert result.best_epoch >= 1 and len(result.history) == 2
    for name in ("model.safetensors", "config.json", "summary.json", "README.md"):
        assert (tmp_path / "run" / "best" / name).exists()
    for name in ("model.safetensors", "optimizer.safetensors", "trainer_state.json", "rng.safetensors"):
        assert (tmp_path / "run" / "last" / name).exists()
    assert not list((tmp_path / "run").glob(".*tmp"))  # no temp dirs left behind
    summary = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    assert summary["data"]["n_products"] == len(tiny_data.catalog)
    # the frozen text tower is not copied into the checkpoint
    assert not any(k.startswith("text_tower.") for k in load_file(str(tmp_path / "run" / "best" / "model.safetensors")))
    # best checkpoint reloads to identical scores
    loaded = QueryLifeModel.from_pretrained(tmp_path / "run" / "best")
    test = tiny_data.splits["test"]
    a = score_pairs(result.model, tiny_data, test).score
    b = score_pairs(loaded, tiny_data, test).score
    assert a == pytest.approx(b, abs=1e-6)


def test_training_improves_ranking_on_train_queries(tiny_config, tiny_data, tmp_path):
    # The tiny storefront's dev split has only a handful of queries, so measure learning where it is deterministic:
    # the ranking of the training queries' own candidates, and the training loss.
    from querylife.config import with_overrides
    from querylife.metrics import per_query_metrics

    # The real all-MiniLM-L6-v2 (shipped in a PyPI package) as the frozen text tower: a random tiny BERT gives
    # features too weak to show learning reliably on 240 products.
    cfg = with_overrides(
        tiny_config,
        {"model.tower.text_model": "minilm", "train.epochs": 8, "train.lr": 3e-3, "train.patience": 0},
    )
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", progress=False)
    train_pairs = tiny_data.splits["train"]

    def ndcg(model):
        scored = train_pairs.assign(score=score_pairs(model, tiny_data, train_pairs).score)
        return per_query_metrics(scored)["ndcg@10"].mean()

    before = ndcg(trainer.model)
    result = trainer.fit()
    model = QueryLifeModel.from_pretrained(tmp_path / "run" / "last")  # the final weights, not the dev-best ones
    after = ndcg(model)
    assert after > before + 0.05, (before, after)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_resume_after_interruption_matches_uninterrupted_run(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.save_every_steps": 2, "train.epochs": 2})
    full = Trainer(cfg, tiny_data, tmp_path / "full", progress=False).fit()
    steps_per_epoch = len(Trainer(cfg, tiny_data, tmp_path / "probe", progress=False).sampler)
    crash_at = steps_per_epoch + 2
    crash_at += 1 - crash_at % 2  # odd: mid-way through epoch 2, one step after a checkpoint (saved every 2 steps)
    assert crash_at < 2 * steps_per_epoch
    with pytest.raises(TrainingInterrupted):
        Trainer(cfg, tiny_data, tmp_path / "crash", progress=False, max_steps=crash_at).fit()
    state = json.loads((tmp_path / "crash" / "last" / "trainer_state.json").read_text())
    assert state["global_step"] == crash_at - 1 and state["epoch"] == 1
    resumed = Trainer(cfg, tiny_data, tmp_path / "crash", progress=False).fit(resume=True)
    a, b = full.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert [h["dev_ndcg@10"] for h in resumed.history] == pytest.approx([h["dev_ndcg@10"] for h in full.history])


def test_negative_mask_marks_labelled_positives(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.hard_negatives": 1})
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", progress=False)
    batch = next(iter(trainer.sampler))
    cols = trainer.product_rows(batch, epoch=0, step=0)
    assert len(batch) < len(cols) <= 2 * len(batch)  # one hard negative per pair where the query has one
    assert (cols[: len(batch)] == trainer.rows[batch]).all()
    mask = trainer.negative_mask(batch, cols)
    assert mask.shape == (len(batch), len(cols))
    queries = [trainer.queries[i] for i in batch]
    pids = trainer.data.catalog["product_id"].to_numpy()[cols]
    train = tiny_data.splits["train"]
    neg = train[~train["positive"]]
    negatives = set(zip(neg["query"], neg["product_id"], strict=True))
    for i, q in enumerate(queries):  # each row's own hard negative is a labelled non-positive of its query
        own = [c for c in range(len(batch), len(cols)) if (q, pids[c]) in negatives]
        assert own or not len(trainer.neg_pool[batch[i]])
    for i, j in mask.nonzero().tolist():
        assert (queries[i], pids[j]) in trainer.known_positive or cols[j] == trainer.rows[batch[i]]
    assert (trainer.product_rows(batch, 0, 0) == cols).all()  # seeded: a resumed run draws the same


def test_hard_negatives_and_sigmoid_loss_train(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.hard_negatives": 2, "loss.kind": "sigmoid", "train.epochs": 1})
    result = Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit()
    assert np.isfinite(result.history[0]["train_loss"])
    assert np.isfinite(result.best_dev_ndcg)


@pytest.mark.parametrize("judge", ["duplicate_title", "guide"])
def test_false_negative_judge_masks_and_logs(tiny_config, tiny_data, tmp_path, judge):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.false_negative_judge": judge, "train.epochs": 1,
                                       "genfilt.guide_model": tiny_config.model.tower.text_model,
                                       "genfilt.margin": 0.05})
    trainer = judged_trainer(cfg, tiny_data, tmp_path / "run")
    assert trainer.negative_mask_fn is not None
    batch = next(iter(trainer.sampler))
    rows = trainer.product_rows(batch, 0, 0)
    judged = trainer.negative_mask_fn([trainer.queries[i] for i in batch], rows)
    assert judged.shape == (len(batch), len(rows)) and judged.dtype == torch.bool
    assert not judged.diagonal().any()  # a positive is never masked
    assert (trainer.negative_mask(batch, rows) | judged).equal(trainer.negative_mask(batch, rows))  # ORed in
    result = trainer.fit()
    stats = result.history[0]["false_negatives"]
    assert stats["masked_negatives"] >= 0 and 0 <= stats["masked_fraction"] <= 1
    if judge == "guide":
        assert stats["masked_negatives"] > 0  # a 0.05 margin on a random guide masks something


def test_descriptions_judge_without_cache_is_a_clear_error(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.false_negative_judge": "descriptions",
                                       "genfilt.cache": str(tmp_path / "none.jsonl")})
    with pytest.raises(FileNotFoundError, match="genfilt describe"):
        judged_trainer(cfg, tiny_data, tmp_path / "run")


def test_a_configured_judge_must_be_passed_in(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.false_negative_judge": "duplicate_title"})
    with pytest.raises(ValueError, match="build_negative_mask_fn"):
        Trainer(cfg, tiny_data, tmp_path / "run", progress=False)


def test_descriptions_judge_uses_the_cache(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides
    from querylife.genfilt import DescriptionCache, products_from_catalog

    items = products_from_catalog(tiny_data.catalog)
    cache = DescriptionCache(tmp_path / "desc.jsonl")
    # a stand-in describer's output: the product type and its attributes, as a generative model would write
    attrs = dict(zip(tiny_data.catalog["product_id"], tiny_data.catalog["attributes"], strict=True))
    cache.put_many([(it, f"{it.product_type}: {attrs[it.product_id]}") for it in items], "stub", "v1")
    cfg = with_overrides(tiny_config, {"train.false_negative_judge": "descriptions", "train.epochs": 1,
                                       "genfilt.cache": str(tmp_path / "desc.jsonl"),
                                       "genfilt.guide_model": tiny_config.model.tower.text_model})
    result = judged_trainer(cfg, tiny_data, tmp_path / "run").fit()
    assert result.history[0]["false_negatives"]["judge"]


def test_resume_of_an_early_stopped_run_does_not_train_on(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    # lr 0 and a frozen vision tower (batch-norm statistics would otherwise move in train mode): the model never
    # changes, dev NDCG never improves after epoch 1, so patience 1 stops after epoch 2 of 5 (mean fusion: a gated
    # mode's epochs inside the gate hold count for neither selection nor patience, test_gate_fit.py)
    cfg = with_overrides(
        tiny_config,
        {
            "train.lr": 0.0,
            "train.patience": 1,
            "train.epochs": 5,
            "model.tower.train_vision_layers": 0,
            "model.fusion.mode": "mean",
        },
    )
    first = Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit()
    assert len(first.history) == 2
    again = Trainer(cfg, tiny_data, tmp_path / "run", progress=False).fit(resume=True)
    assert len(again.history) == 2 and again.best_epoch == first.best_epoch


class _FlagAll:
    """A judge that flags every off-positive column (to see what protection and the action do with flags)."""

    name = "flag_all"

    def mask(self, queries, product_ids, positive_ids):
        return np.array([[p != pos for p in product_ids] for pos in positive_ids])


def test_judge_never_overrules_a_labelled_negative_unless_asked(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides
    from querylife.genfilt.training import JudgeMask, labelled_negative_pairs

    cfg = with_overrides(tiny_config, {"train.hard_negatives": 3})
    negatives = labelled_negative_pairs(tiny_data)
    ids = tiny_data.catalog["product_id"].to_numpy()
    trainer = Trainer(cfg, tiny_data, tmp_path / "run", progress=False)
    batch = next(iter(trainer.sampler))
    rows = trainer.product_rows(batch, 0, 0)  # the hard negatives are labelled non-relevant for their row
    queries = [trainer.queries[i] for i in batch]
    labelled = np.array([[(q, p) in negatives for p in ids[rows]] for q in queries])
    assert labelled.sum() > 0
    protected = JudgeMask(_FlagAll(), ids, labelled_negatives=negatives, protected=negatives)(queries, rows).numpy()
    assert not (protected & labelled).any() and protected.sum() > 0
    overruled = JudgeMask(_FlagAll(), ids, labelled_negatives=negatives)
    assert (overruled(queries, rows).numpy() & labelled).sum() == labelled.sum()
    stats = overruled.epoch_stats()
    assert stats["masked_labelled_negatives"] == labelled.sum() and stats["protected_labelled_negatives"] == 0


@pytest.mark.parametrize("level", ["irrelevant", "all", "none"])
def test_protection_levels_pick_the_labels_a_judge_may_not_overrule(tiny_config, tiny_data, level):
    from querylife.config import with_overrides
    from querylife.genfilt.training import protected_pairs

    train = tiny_data.splits["train"]
    cfg = with_overrides(tiny_config, {"train.protect_labelled_negatives": level})
    got = protected_pairs(cfg, tiny_data)
    zero = train[train["gain"] == 0]
    irrelevant = set(zip(zero["query"], zero["product_id"], strict=True))
    partial = train[(train["gain"] > 0) & ~train["positive"].astype(bool)]
    partial = set(zip(partial["query"], partial["product_id"], strict=True))
    assert irrelevant and partial  # the storefront has both kinds of labelled negatives
    expected = {"irrelevant": irrelevant, "all": irrelevant | partial, "none": set()}[level]
    assert got == expected


def test_flagged_negatives_as_extra_positives_train(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(tiny_config, {"train.false_negative_judge": "guide", "train.epochs": 1,
                                       "train.false_negative_action": "positive", "genfilt.margin": 0.05,
                                       "genfilt.guide_model": tiny_config.model.tower.text_model})
    trainer = judged_trainer(cfg, tiny_data, tmp_path / "run")
    batch = next(iter(trainer.sampler))
    ignore, extra = trainer.batch_masks(batch)
    assert extra is not None and extra.any() and not (ignore & extra).any() and not extra.diagonal().any()
    result = trainer.fit()
    assert np.isfinite(result.history[0]["train_loss"]) and result.history[0]["false_negatives"]["masked_negatives"]


def test_generative_judge_in_training_asks_the_server_once_per_pair(tiny_config, tiny_data, tmp_path):
    from test_genfilt_openai import FakeOpenAIServer, stub_descriptions

    from querylife.config import with_overrides

    stub_descriptions(tiny_data.catalog, tmp_path / "desc.jsonl")
    with FakeOpenAIServer(rule=lambda title: "Yes") as server:
        overrides = {"train.false_negative_judge": "generative", "train.epochs": 2,
                     "genfilt.cache": str(tmp_path / "desc.jsonl"), "genfilt.answers": str(tmp_path / "ans.jsonl"),
                     "genfilt.guide_model": tiny_config.model.tower.text_model, "genfilt.prefilter_margin": 0.05,
                     "genfilt.base_url": server.url, "genfilt.model": "m", "genfilt.max_questions_per_batch": 4,
                     "genfilt.judge_prompt.user": "Title: {query} => {product}"}
        trainer = judged_trainer(with_overrides(tiny_config, overrides), tiny_data, tmp_path / "run")
        result = trainer.fit()
        judge = trainer.negative_mask_fn.judge
        assert 0 < judge.stats.asked <= 4 * 2 * len(trainer.sampler)  # the per-batch budget holds
        asked = [server.title_of(r) for r in server.requests]
        assert len(asked) == judge.stats.asked == len(set(asked))  # answers are cached: no pair is asked twice
        st = judge.stats
        assert st.cache_hits > 0 and st.yes == st.asked + st.cache_hits and st.no == 0
        assert st.undecided == st.over_budget  # over the budget: the prefilter's decision stands
    assert (tmp_path / "ans.jsonl").read_text().count("\n") == judge.stats.asked  # one line per answer
    assert result.history[-1]["false_negatives"]["judge"].startswith("generative")


def test_gate_start_fraction_holds_the_gate_at_mean_fusion_then_trains_it(tiny_config, tiny_data, tmp_path):
    from querylife.config import with_overrides

    cfg = with_overrides(
        tiny_config, {"train.epochs": 2, "train.patience": 0, "train.gate_start_fraction": 0.5, "train.lr": 3e-3}
    )
    steps_per_epoch = len(Trainer(cfg, tiny_data, tmp_path / "probe", progress=False).sampler)
    # Interrupt at the end of the hold (half of the steps): the gate must still be exactly at its init while the
    # rest of the model (towers, heads, temperature) has moved.
    hold = steps_per_epoch  # 2 epochs, fraction 0.5
    with pytest.raises(TrainingInterrupted):
        held_cfg = with_overrides(cfg, {"train.save_every_steps": hold})
        Trainer(held_cfg, tiny_data, tmp_path / "held", progress=False, max_steps=hold).fit()
    init = Trainer(cfg, tiny_data, tmp_path / "init", progress=False).model
    held = QueryLifeModel.from_pretrained(tmp_path / "held" / "last")
    gate_names = ("fusion.type_logit", "fusion.gate_q.weight", "fusion.gate_out.weight", "fusion.gate_out.bias")
    a, b = init.state_dict(), held.state_dict()
    for name in gate_names:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["log_logit_scale"], b["log_logit_scale"])  # the temperature is not held
    assert not torch.equal(a["image_proj.weight"], b["image_proj.weight"])
    d = held.config.embed_dim
    w = held.fusion.image_weight(
        torch.randn(3, d), torch.randn(4, d), torch.randn(4, d), torch.tensor([1, 2, 1, 2]),
        torch.ones(4, dtype=torch.bool), pairwise=True,
    )  # (3, 4)
    assert torch.allclose(w, torch.full_like(w, 0.5))  # exactly mean fusion during the hold
    # ... and trained exactly as mean fusion: same towers, heads and temperature after the same steps.
    mean_cfg = with_overrides(held_cfg, {"model.fusion.mode": "mean"})
    with pytest.raises(TrainingInterrupted):
        Trainer(mean_cfg, tiny_data, tmp_path / "mean", progress=False, max_steps=hold).fit()
    mean = QueryLifeModel.from_pretrained(tmp_path / "mean" / "last").state_dict()
    shared = [k for k in mean if not k.startswith("fusion.")]
    assert shared and all(k in b for k in shared)
    for name in shared:
        assert torch.allclose(mean[name], b[name], atol=1e-6), name
    # After the hold the gate learns (the last weights: the dev-best ones may come from the hold).
    done = Trainer(cfg, tiny_data, tmp_path / "full", progress=False).fit()
    assert [h["gate_trained"] for h in done.history] == [False, True]
    trained = QueryLifeModel.from_pretrained(tmp_path / "full" / "last").state_dict()
    assert not torch.equal(a["fusion.type_logit"], trained["fusion.type_logit"].cpu())
    assert not torch.equal(a["fusion.gate_out.weight"], trained["fusion.gate_out.weight"].cpu())


def test_gate_start_fraction_is_validated():
    from querylife.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="gate_start_fraction"):
        load_config(None, ["train.gate_start_fraction=1.0"])
