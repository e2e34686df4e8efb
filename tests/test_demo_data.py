"""Demo storefront: the output contract, determinism, caching, atomic writes, and that the data really has the
Query-LIFE problem (clothing attributes in the image, electronics attributes in the title)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from querylife.data.storefront import (
    GENERATOR_VERSION,
    IMAGE_INFORMATIVE_TYPES,
    PRODUCT_TYPES,
    TITLE_INFORMATIVE_TYPES,
    DemoConfig,
    DemoStorefront,
    generate_demo,
    render_attribute_sheet,
    render_contact_sheet,
    render_product_image,
    writer,
)

SMALL = DemoConfig(n_products=200, seed=1, image_size=32)
CATALOG_COLUMNS = ["product_id", "title", "image_path", "product_type", "attributes", "group_id", "seller"]
COLOUR_RE = re.compile(r"\b(?:" + "|".join(PRODUCT_TYPES["dress"].attributes["colour"]) + r")\b")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class _CountingRenderer:
    """Wraps the image renderer to count calls (and optionally fail after ``fail_after`` calls)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.original = writer.render_image

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("renderer killed midway")
        return self.original(*args, **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> DemoStorefront:
    return generate_demo(tmp_path_factory.mktemp("demo") / "store", SMALL, progress=False)


@pytest.fixture(scope="module")
def catalog(store) -> pd.DataFrame:
    return pd.read_parquet(store.catalog_path)


@pytest.fixture(scope="module")
def pairs(store, catalog) -> pd.DataFrame:
    df = pd.read_parquet(store.pairs_path)
    info = catalog.set_index("product_id")
    df["product_type"] = df.product_id.map(info.product_type)
    df["title"] = df.product_id.map(info.title)
    df["product_attrs"] = df.product_id.map(info.attributes).map(json.loads)
    return df


@pytest.fixture(scope="module")
def queries(store) -> pd.DataFrame:
    df = pd.read_parquet(store.queries_path)
    df["query_attrs"] = df.attributes.map(json.loads)
    return df.set_index("query")


# --- contract


def test_paths_and_meta(store, catalog, pairs):
    assert store.catalog_path == store.out_dir / "catalog.parquet"
    assert store.pairs_path == store.out_dir / "pairs.parquet"
    assert store.meta_path == store.out_dir / "meta.json"
    meta = store.meta()
    assert meta["config"] == SMALL.to_json()
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["image_informative_types"] == IMAGE_INFORMATIVE_TYPES
    assert meta["title_informative_types"] == TITLE_INFORMATIVE_TYPES
    assert set(IMAGE_INFORMATIVE_TYPES) | set(TITLE_INFORMATIVE_TYPES) == set(PRODUCT_TYPES)
    assert meta["counts"]["products"] == len(catalog) == SMALL.n_products
    assert meta["counts"]["pairs"] == len(pairs)
    assert meta["label_counts"] == pairs.label.value_counts().to_dict()
    groups = catalog.group_id.value_counts()
    assert meta["duplicate_stats"]["groups_with_duplicates"] == int((groups > 1).sum())


def test_catalog_schema(store, catalog):
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert all(catalog[c].map(type).eq(str).all() for c in CATALOG_COLUMNS)
    assert catalog.product_id.is_unique
    assert (catalog.title.str.len() > 0).all()
    assert set(catalog.product_type) == set(PRODUCT_TYPES)
    assert (catalog.image_path == "images/" + catalog.product_id + ".png").all()
    for ptype, attrs in zip(catalog.product_type, catalog.attributes, strict=True):
        parsed = json.loads(attrs)
        spec = PRODUCT_TYPES[ptype].attributes
        assert list(parsed) == list(spec) and all(parsed[a] in spec[a] for a in spec)


def test_images_exist_rgb_right_size(store, catalog):
    assert len(list((store.out_dir / "images").iterdir())) == len(catalog)
    for rel in catalog.image_path:
        with Image.open(store.out_dir / rel) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (SMALL.image_size,) * 2


def test_pairs_schema_and_labels(pairs, catalog, queries):
    assert list(pairs.columns[:3]) == ["query", "product_id", "label"]
    assert set(pairs.label) <= {"exact", "partial", "irrelevant"}
    assert pairs.product_id.isin(catalog.product_id).all()
    assert not pairs.duplicated(["query", "product_id"]).any()
    assert set(pairs["query"]) == set(queries.index)
    counts = pairs.groupby("query").size()
    assert counts.between(SMALL.min_candidates, SMALL.max_candidates).all()
    assert (pairs[pairs.label == "exact"].groupby("query").size().reindex(queries.index) >= 1).all()


def test_labels_follow_type_and_attributes(pairs, queries):
    for row in pairs.itertuples():
        q = queries.loc[row.query]
        same_type = row.product_type == q.product_type
        if row.label == "irrelevant":
            assert not same_type
        else:
            # exact and partial candidates come from the query's own type, so ranking them needs attributes
            assert same_type
            matches = all(row.product_attrs[a] == v for a, v in q.query_attrs.items())
            assert matches == (row.label == "exact"), (row.query, row.product_attrs)


def test_label_mix(store):
    frac = store.meta()["label_fractions"]
    assert 0.10 <= frac["exact"] <= 0.35
    assert 0.30 <= frac["partial"] <= 0.65
    assert 0.20 <= frac["irrelevant"] <= 0.40


# --- the modality split


def test_titles_name_every_attribute_that_is_not_drawn(catalog):
    assert len(catalog[catalog.product_type.isin(TITLE_INFORMATIVE_TYPES)]) > 0
    for ptype, title, attrs in zip(catalog.product_type, catalog.title, catalog.attributes, strict=True):
        drawn = PRODUCT_TYPES[ptype].image_attributes
        for name, value in json.loads(attrs).items():
            if name not in drawn:
                assert value in title.lower(), (title, value)


def test_every_type_has_attributes_in_both_modalities():
    for spec in PRODUCT_TYPES.values():
        assert spec.image_attributes and set(spec.image_attributes) < set(spec.attributes), spec.name


def test_image_informative_titles_rarely_name_colour(catalog):
    rows = catalog[catalog.product_type.isin(IMAGE_INFORMATIVE_TYPES)]
    rate = rows.title.str.lower().str.contains(COLOUR_RE).mean()
    assert rate <= 0.15
    # and the titles of one type are not all alike: brand and marketing words vary
    assert rows[rows.product_type == "dress"].title.nunique() == (rows.product_type == "dress").sum()


def test_image_queries_are_not_copied_from_titles(pairs, queries):
    image_queries = queries[
        queries.product_type.isin(IMAGE_INFORMATIVE_TYPES) & (queries.query_attrs.map(len) > 0)
    ]
    assert len(image_queries) > 0
    exact = pairs[pairs.label == "exact"]
    copied = [
        q for q in image_queries.index if exact[exact["query"] == q].title.str.lower().str.contains(q).any()
    ]
    assert len(copied) / len(image_queries) <= 0.1


def test_clothing_colour_is_visible_in_images(store, catalog):
    rows = catalog[catalog.product_type.isin(IMAGE_INFORMATIVE_TYPES)].copy()
    rows["colour"] = rows.attributes.map(lambda s: json.loads(s)["colour"])

    def mean_rgb(colour: str) -> np.ndarray:
        paths = rows[rows.colour == colour].image_path
        return np.mean(
            [np.asarray(Image.open(store.out_dir / p), dtype=float).mean(axis=(0, 1)) for p in paths], 0
        )

    red, blue = mean_rgb("red"), mean_rgb("blue")
    assert (red[0] - red[2]) - (blue[0] - blue[2]) > 25


def test_clothing_attributes_change_the_pixels():
    base = {"colour": "red", "pattern": "plain", "shape": "a-line"}
    ref = np.asarray(render_product_image("dress", base, seed=3), dtype=float)
    for change in ({"colour": "blue"}, {"pattern": "striped"}, {"shape": "maxi"}):
        other = np.asarray(render_product_image("dress", {**base, **change}, seed=3), dtype=float)
        assert np.abs(ref - other).mean() > 3, change


def test_electronics_images_show_only_the_colour():
    # Same item look and photo stream: title-only attributes leave the picture identical, the colour changes it.
    for ptype in TITLE_INFORMATIVE_TYPES:
        spec = PRODUCT_TYPES[ptype].attributes
        base = {a: v[0] for a, v in spec.items()}
        first = np.asarray(render_product_image(ptype, base, seed=5), dtype=float)
        specs = {**{a: v[-1] for a, v in spec.items()}, "colour": base["colour"]}
        assert np.array_equal(first, np.asarray(render_product_image(ptype, specs, seed=5), dtype=float)), ptype
        recoloured = np.asarray(render_product_image(ptype, {**base, "colour": spec["colour"][1]}, seed=5), dtype=float)
        assert np.abs(first - recoloured).mean() > 1.5, ptype  # a cable is thin: fewer pixels change



def test_docs_figures_have_one_row_per_type(store, tmp_path):
    examples = render_contact_sheet(store, tmp_path / "figs" / "examples.png", per_type=2)
    with Image.open(examples) as im:  # a 96 px label column, 176 px per product, 58 px of caption under each
        assert im.size == (96 + 2 * 176, len(PRODUCT_TYPES) * (SMALL.image_size * 2 + 58))
    attributes = render_attribute_sheet(tmp_path / "figs" / "attributes.png", size=32)
    with Image.open(attributes) as im:  # 6 colours + 4 patterns + 3 shapes per clothing type
        assert im.size == (13 * (64 + 6) + 6, len(IMAGE_INFORMATIVE_TYPES) * (64 + 16 + 6))


# --- duplicates


def test_duplicates_share_type_and_attributes(store, catalog):
    sizes = catalog.group_id.value_counts()
    dup_groups = sizes[sizes > 1].index
    assert len(dup_groups) > 0 and sizes.max() <= 3
    for gid in dup_groups:
        g = catalog[catalog.group_id == gid]
        assert g.product_type.nunique() == 1 and g.attributes.nunique() == 1
        assert g.seller.is_unique
        photos = {(store.out_dir / p).read_bytes() for p in g.image_path}
        assert len(photos) == len(g)  # re-shot, not copied


def test_duplicate_labels_are_consistent(pairs, catalog):
    group = catalog.set_index("product_id").group_id
    labelled = pairs.assign(group_id=pairs.product_id.map(group))
    per_group = labelled.groupby(["query", "group_id"]).label.nunique()
    assert (per_group == 1).all()


# --- determinism, caching, atomic writes


def test_same_seed_same_bytes_other_seed_other_data(store, tmp_path):
    again = generate_demo(tmp_path / "again", SMALL, progress=False)
    assert _files(again.out_dir) == _files(store.out_dir)
    other = generate_demo(
        tmp_path / "other", DemoConfig(n_products=200, seed=2, image_size=32), progress=False
    )
    assert other.catalog_path.read_bytes() != store.catalog_path.read_bytes()
    assert other.pairs_path.read_bytes() != store.pairs_path.read_bytes()
    assert (other.out_dir / "images" / "p000000.png").read_bytes() != (
        store.out_dir / "images" / "p000000.png"
    ).read_bytes()


def test_image_size_does_not_change_catalog_or_labels(store, tmp_path):
    small = generate_demo(tmp_path / "s16", DemoConfig(n_products=200, seed=1, image_size=16), progress=False)
    assert small.catalog_path.read_bytes() == store.catalog_path.read_bytes()
    assert small.pairs_path.read_bytes() == store.pairs_path.read_bytes()


def test_reuse_without_regeneration_and_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "store"
    generate_demo(out, SMALL, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    inode = out.stat().st_ino
    counter = _CountingRenderer()
    monkeypatch.setattr(writer, "render_image", counter)

    store = generate_demo(out, SMALL, progress=False)
    assert counter.calls == 0
    assert store.out_dir == out.absolute()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    content = _files(out)
    generate_demo(str(out), SMALL, progress=False, overwrite=True)
    assert counter.calls == SMALL.n_products
    assert out.stat().st_ino != inode
    assert _files(out) == content


def test_other_config_replaces_storefront(tmp_path):
    out = tmp_path / "store"
    generate_demo(out, SMALL, progress=False)
    cfg = DemoConfig(n_products=120, seed=1, image_size=32)
    store = generate_demo(out, cfg, progress=False)
    assert store.meta()["config"] == cfg.to_json()
    assert len(pd.read_parquet(store.catalog_path)) == 120
    assert len(list((out / "images").iterdir())) == 120


def test_refuses_a_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_demo(out, SMALL, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    generate_demo(out, SMALL, progress=False, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "meta.json").exists()


def test_killed_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / "store"
    monkeypatch.setattr(writer, "render_image", _CountingRenderer(fail_after=50))
    with pytest.raises(RuntimeError, match="killed midway"):
        generate_demo(out, SMALL, progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # the temp dir is cleaned up too


def test_failed_regeneration_keeps_the_previous_storefront(tmp_path, monkeypatch):
    out = tmp_path / "store"
    generate_demo(out, SMALL, progress=False)
    content = _files(out)
    monkeypatch.setattr(writer, "render_image", _CountingRenderer(fail_after=10))
    with pytest.raises(RuntimeError):
        generate_demo(out, DemoConfig(n_products=200, seed=9, image_size=32), progress=False)
    assert _files(out) == content
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_stale_temp_dir_of_a_dead_process_is_removed(tmp_path):
    # A dir named like ours, owned by a pid that cannot exist, is debris from a killed run.
    stale = tmp_path / ".store.tmp-999999999-abc"
    stale.mkdir()
    (stale / "catalog.parquet").write_text("half")
    generate_demo(tmp_path / "store", SMALL, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["store"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_products": 10},
        {"image_size": 8},
        {"duplicate_rate": 1.5},
        {"min_candidates": 30},
        {"exact_share": (0.5, 0.2)},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        DemoConfig(**kwargs)
