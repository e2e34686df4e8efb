"""Per-modality query heads (``model.query_heads="per_modality"``): q = [q_t; q_v], the fused score's formula, the
ends of the image weight, gradients to both heads, index vectors, save/load, the refused concat, the loss terms."""

import pytest
import torch
import torch.nn.functional as F

from querylife.fusion import Fusion, FusionConfig
from querylife.losses import LossConfig, term_similarities
from querylife.model import ModelConfig, QueryLifeModel
from querylife.towers import SmallCNNConfig, TowerConfig

D, N_TYPES = 8, 4
TYPES = ["dress", "charger", "cable"]
PER_MODALITY_MODES = ["title", "image", "mean", "type_gate", "query_type_gate", "dev_type_gate"]


def _inputs(bq=3, bp=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.cat([F.normalize(torch.randn(bq, D, generator=g), dim=-1) for _ in range(2)], -1)  # (bq, 2D)
    t = F.normalize(torch.randn(bp, D, generator=g), dim=-1)
    v = F.normalize(torch.randn(bp, D, generator=g), dim=-1)
    types = torch.randint(0, N_TYPES, (bp,), generator=g)
    has = torch.ones(bp, dtype=torch.bool)
    has[-1] = False
    v[-1] = 0.0  # no image -> zero vector, as the model gives it
    return q, t, v, types, has


def _fusion(mode="query_type_gate", seed=0):
    torch.manual_seed(seed)
    fusion = Fusion(FusionConfig(mode=mode), N_TYPES, D, query_heads="per_modality")
    with torch.no_grad():
        if hasattr(fusion, "type_logit"):
            fusion.type_logit.copy_(torch.randn(N_TYPES))
        if fusion.query_aware:
            fusion.gate_out.weight.normal_()  # a gate that really depends on the query
    return fusion


@pytest.mark.parametrize("mode", PER_MODALITY_MODES)
def test_score_is_the_formula_and_pairwise_equals_paired(mode):
    fusion = _fusion(mode)
    q, t, v, types, has = _inputs()
    out = fusion.pairwise(q, t, v, types, has)
    assert out.scores.shape == out.image_weight.shape == (3, 5)
    w = out.image_weight
    q_t, q_v = q[:, :D], q[:, D:]
    expected = ((1 - w) * (q_t @ t.T) + w * (q_v @ v.T)) / ((1 - w) ** 2 + w**2).sqrt()
    assert torch.allclose(out.scores, expected, atol=1e-6)
    # = sqrt(2) x the cosine of q and [(1 - w) t; w v] in the concatenated space
    p = torch.cat([(1 - w).unsqueeze(-1) * t, w.unsqueeze(-1) * v], -1)  # (3, 5, 2D)
    cos = F.cosine_similarity(q.unsqueeze(1).expand_as(p), p, dim=-1)
    assert torch.allclose(out.scores, 2**0.5 * cos, atol=1e-5)
    assert torch.all(w[:, -1] == 0)  # no image: the title half alone
    assert torch.allclose(out.scores[:, -1], q_t @ t[-1], atol=1e-6)
    rows = torch.arange(3).repeat_interleave(5)
    cols = torch.arange(5).repeat(3)
    paired = fusion.paired(q[rows], t[cols], v[cols], types[cols], has[cols])
    assert torch.allclose(paired.scores, out.scores.reshape(-1), atol=1e-6)


def test_image_weight_one_is_the_image_head_and_zero_the_title_head():
    q, t, v, types, has = _inputs()
    has = torch.ones(5, dtype=torch.bool)
    v = F.normalize(torch.randn(5, D, generator=torch.Generator().manual_seed(3)), dim=-1)
    image = Fusion(FusionConfig(mode="image"), N_TYPES, D, query_heads="per_modality").pairwise(q, t, v, types, has)
    title = Fusion(FusionConfig(mode="title"), N_TYPES, D, query_heads="per_modality").pairwise(q, t, v, types, has)
    assert torch.allclose(image.scores, F.cosine_similarity(q[:, None, D:], v[None], dim=-1), atol=1e-6)
    assert torch.allclose(title.scores, F.cosine_similarity(q[:, None, :D], t[None], dim=-1), atol=1e-6)
    # the same ends through the gate: w pushed to 1 / 0 by the type logits
    gate = _fusion("type_gate")
    for logit, expected in ((30.0, image.scores), (-30.0, title.scores)):
        with torch.no_grad():
            gate.type_logit.fill_(logit)
        assert torch.allclose(gate.pairwise(q, t, v, types, has).scores, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["type_gate", "query_type_gate", "dev_type_gate", "mean", "title", "image"])
def test_index_vectors_times_q_are_the_type_gated_scores(mode):
    fusion = _fusion(mode)
    if fusion.query_aware:
        with torch.no_grad():
            fusion.gate_out.weight.zero_()  # the index holds the type-only part of the gate
    q, t, v, types, has = _inputs()
    index = fusion.index_vectors(t, v, types, has)
    assert index.shape == (5, 2 * D)
    assert torch.allclose(index.norm(dim=-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(q @ index.T, fusion.pairwise(q, t, v, types, has).scores, atol=1e-6)


def test_gate_reads_the_title_half():
    fusion = _fusion("query_type_gate")
    q, t, v, types, has = _inputs()
    w = fusion.pairwise(q, t, v, types, has).image_weight
    other_image_half = torch.cat([q[:, :D], q[:, D:].flip(0)], -1)
    assert torch.equal(fusion.pairwise(other_image_half, t, v, types, has).image_weight, w)
    other_title_half = torch.cat([q[:, :D].flip(0), q[:, D:]], -1)
    assert not torch.allclose(fusion.pairwise(other_title_half, t, v, types, has).image_weight, w)


def test_concat_and_wrong_widths_are_refused(tiny_text_model_dir):
    with pytest.raises(ValueError, match='query_heads="per_modality" does not work with model.fusion.mode="concat"'):
        Fusion(FusionConfig(mode="concat"), N_TYPES, D, query_heads="per_modality")
    with pytest.raises(ValueError, match="concat"):
        ModelConfig(query_heads="per_modality", fusion=FusionConfig(mode="concat"))
    with pytest.raises(ValueError, match="query_heads"):
        ModelConfig(query_heads="both")
    q, t, v, types, has = _inputs()
    with pytest.raises(ValueError, match=r"width 16 \(\[q_t; q_v\]\), got 8"):
        _fusion().pairwise(q[:, :D], t, v, types, has)


def _model_config(text_dir, **kw):
    tower = TowerConfig(text_model=str(text_dir), small_cnn=SmallCNNConfig(channels=(8, 16), image_size=32))
    return ModelConfig(tower=tower, embed_dim=16, product_types=TYPES, **kw)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    has = torch.ones(n, dtype=torch.bool)
    has[-1] = False
    queries = ["red dress", "usb c cable", "fast charger 65 w", "blue striped shirt"][:n]
    titles = ["summer dress red", "usb c cable 2m", "charger 20 w", "classic shirt"][:n]
    return queries, titles, images, has


def _forward(model):
    queries, titles, images, has = _batch()
    return model(
        type_ids=model.type_ids(["dress", "cable", "charger", "dress"]),
        has_image=has,
        queries=queries,
        titles=titles,
        images=images,
    )


def test_model_shapes_start_and_loss_terms(tiny_text_model_dir):
    torch.manual_seed(0)
    shared = QueryLifeModel(_model_config(tiny_text_model_dir))
    torch.manual_seed(0)
    heads = QueryLifeModel(_model_config(tiny_text_model_dir, query_heads="per_modality"))
    assert heads.query_dim == 32 and shared.query_dim == 16
    a, b = _forward(shared), _forward(heads)
    assert b.q.shape == (4, 32) and b.t.shape == b.v.shape == (4, 16)
    for half in (b.q[:, :16], b.q[:, 16:]):
        assert torch.allclose(half.norm(dim=-1), torch.ones(4))
    # q_v's head starts as q_t's and no other part's init changed: step 0's vectors and aux terms are the shared
    # model's (only the fused score's normalisation differs: no t.v cross term).
    assert torch.equal(b.q[:, :16], a.q) and torch.equal(b.q[:, 16:], a.q)
    assert torch.equal(b.t, a.t) and torch.equal(b.v, a.v)
    for name in ("query_title", "query_image", "title_image"):
        assert torch.equal(b.sims[name], a.sims[name])
    # the loss's own similarity matrices use q_t for titles and q_v for images
    with torch.no_grad():
        heads.query_image_proj.weight.mul_(-1.0)  # q_v = -q_t
    out = _forward(heads)
    emb = heads.embed(type_ids=heads.type_ids(["dress"] * 4), has_image=_batch()[3], queries=_batch()[0],
                      titles=_batch()[1], images=_batch()[2])
    sims = term_similarities(emb, LossConfig(), heads.fusion)
    assert torch.allclose(sims["query_title"], emb.q[:, :16] @ emb.t.T)
    assert torch.allclose(sims["query_image"], emb.q[:, 16:] @ emb.v.T)
    assert torch.allclose(out.sims["query_image"], -a.sims["query_image"], atol=1e-6)


def test_gradients_reach_both_query_heads(tiny_text_model_dir):
    model = QueryLifeModel(_model_config(tiny_text_model_dir, query_heads="per_modality"))
    model.train()
    out = _forward(model)
    (out.scores.diagonal().sum() - 0.1 * out.scores.sum()).backward()
    assert model.title_proj.weight.grad.abs().sum() > 0  # q_t's head (shared with titles) and the titles
    assert model.query_image_proj.weight.grad.abs().sum() > 0
    assert model.image_proj.weight.grad.abs().sum() > 0
    groups = model.parameter_groups(1e-3, 0.01, 30.0)
    decay = next(g for g in groups if g["name"] == "decay")["params"]
    assert any(p is model.query_image_proj.weight for p in decay)


def test_save_load_round_trip(tiny_text_model_dir, tmp_path):
    cfg = _model_config(tiny_text_model_dir, query_heads="per_modality", separate_query_projection=True)
    model = QueryLifeModel(cfg)
    with torch.no_grad():
        model.query_image_proj.weight.add_(0.1 * torch.randn_like(model.query_image_proj.weight))
    model.eval()
    before = _forward(model).scores
    model.save_pretrained(tmp_path / "ckpt")
    loaded = QueryLifeModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.query_heads == "per_modality"
    assert torch.equal(loaded.query_image_proj.weight, model.query_image_proj.weight)
    assert torch.allclose(_forward(loaded).scores, before, atol=1e-6)


def test_default_is_shared_and_builds_no_second_head(tiny_text_model_dir):
    assert ModelConfig().query_heads == "shared"
    model = QueryLifeModel(_model_config(tiny_text_model_dir))
    assert model.query_image_proj is None
    assert not any("query_image_proj" in k for k in model.state_dict())


def _wide_toy_batch():
    """test_distributed's toy batch with [q_t; q_v] queries (2 x 4 wide) instead of (4,) ones."""
    from test_distributed import _toy_batch

    counts, emb, masks = _toy_batch()
    g = torch.Generator().manual_seed(5)
    q_v = F.normalize(torch.randn(emb.q.shape, generator=g), dim=-1)
    return counts, type(emb)(torch.cat([emb.q, q_v], -1), emb.t, emb.v, emb.type_ids, emb.has_image), masks


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_loss_of_wide_queries_sums_to_the_single_process_loss(world, monkeypatch):
    from test_distributed import TOL, _ranks_loss

    from querylife.losses import alignment_loss

    counts, emb, masks = _wide_toy_batch()
    cfg, fusion = LossConfig(), Fusion(FusionConfig(), 2, 4, query_heads="per_modality")
    ref = alignment_loss(emb, masks, cfg, fusion, torch.tensor(10.0), torch.tensor(-1.0))
    total, _ = _ranks_loss(counts, emb, masks, cfg, fusion, world, monkeypatch)
    assert total == pytest.approx(ref.parts["total"], rel=TOL)


def test_gather_shard_packs_wide_queries_exactly():
    from querylife.distributed import gather_shard, shard_batch

    _, emb, _ = _wide_toy_batch()
    emb = type(emb)(emb.q, emb.t[:5], emb.v[:5], emb.type_ids[:5] + 7, emb.has_image[:5])
    got = gather_shard(emb, shard_batch([0] * 5, 1, 0))
    assert got.q.shape == (5, 8) and torch.equal(got.q, emb.q)
    assert torch.equal(got.t, emb.t) and torch.equal(got.v, emb.v)
    assert torch.equal(got.type_ids, emb.type_ids) and torch.equal(got.has_image, emb.has_image)
