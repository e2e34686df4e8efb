"""The named storefronts beside the demo (home_books, media_market): each has the properties it is made for
(visual / textual / mixed types, shared stock icons, missing photos, a second language, duplicates, paraphrases
split by intent), is selected by name, and is pinned like the demo, so a later change cannot move them silently."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_cli import cli, show

from querylife.data.readers import load_catalog, load_pairs
from querylife.data.splits import split_by_query
from querylife.data.storefront import (
    DEFAULT_STOREFRONT,
    STOREFRONTS,
    DemoConfig,
    DemoStorefront,
    generate_demo,
    render_attribute_sheet,
    render_contact_sheet,
    render_product_image,
    storefront_spec,
)
from querylife.data.storefront.render import render_icon

NEW = ("home_books", "media_market")
# Enough listings for the rates below to be measured within a few percent, still about a second each at 16 px.
CONFIGS = {name: DemoConfig(n_products=600, seed=3, image_size=16, storefront=name) for name in NEW}

# Tables (as CSV text) + decoded pixels of every tenth listing photo + one stand-alone photo and one stock icon.
PINNED = {
    "home_books": "c5a6b108a7ed57b27794eebac0be597477b2ac60b8618170ed66ca13633df4bd",
    "media_market": "cc9f8b2ccccb8fbb7a53e768b77d881b6df5d59f50b3769b381e2e7e5686b54d",
}


@pytest.fixture(scope="module", params=NEW)
def made(request, tmp_path_factory):
    name = request.param
    store = generate_demo(tmp_path_factory.mktemp(name) / "store", CONFIGS[name], progress=False)
    catalog = pd.read_parquet(store.catalog_path)
    catalog["true_attrs"] = catalog.attributes.map(json.loads)
    pairs = pd.read_parquet(store.pairs_path)
    queries = pd.read_parquet(store.queries_path)
    return name, storefront_spec(name), store, catalog, pairs, queries


def _within(share: float, rate: float, n: int) -> bool:
    """``share`` of ``n`` draws is within 4 standard deviations of ``rate``."""
    return abs(share - rate) <= 4 * math.sqrt(rate * (1 - rate) / n)


# --- the type balance each storefront is made for


def test_home_books_and_media_market_have_the_stated_types():
    home, media = storefront_spec("home_books"), storefront_spec("media_market")
    assert (len(home.image_informative_types), len(home.title_informative_types), len(home.mixed_types)) == (3, 2, 2)
    assert len(media.product_types) == 10 and len(media.title_informative_types) == 6
    for spec in (home, media):
        for name in spec.image_informative_types:  # colour, pattern and shape only in the photo
            t = spec.product_types[name]
            assert set(t.image_attributes) == set(t.attributes) and t.title_kind == "marketing"
        for name in spec.title_informative_types:  # everything in the title, the photo a stock icon
            t = spec.product_types[name]
            assert t.image_attributes == () and t.image_style == "shared_icon" and t.title_kind == "spec"
        for name in spec.mixed_types:  # one attribute each way
            t = spec.product_types[name]
            assert len(t.attributes) == 2 and len(t.image_attributes) == 1 and t.image_style == "rendered"
    assert STOREFRONTS[DEFAULT_STOREFRONT].mixed_types == []


def test_meta_and_type_groups(made):
    name, spec, store, catalog, pairs, _ = made
    meta = store.meta()
    assert meta["config"]["storefront"] == name and meta["storefront"]["name"] == name
    assert meta["counts"]["products"] == len(catalog) and meta["counts"]["pairs"] == len(pairs)
    assert meta["counts"]["images"] == int(catalog.image_path.notna().sum())
    groups = store.type_groups()
    assert groups == {
        "image-informative": spec.image_informative_types,
        "title-informative": spec.title_informative_types,
        "mixed": spec.mixed_types,
    }
    assert sorted(t for ts in groups.values() for t in ts) == sorted(catalog.product_type.unique())
    assert store.config_overrides()["data.split_by"] == "intent"


def test_the_demo_keeps_its_meta_and_groups(tmp_path):
    config = DemoConfig(n_products=64, seed=1, image_size=16)
    assert "storefront" not in config.to_json()  # the demo's cache key is what it was before storefronts had names
    store = generate_demo(tmp_path / "demo", config, progress=False)
    meta = store.meta()
    assert "storefront" not in meta and "mixed_types" not in meta
    assert list(store.type_groups()) == ["image-informative", "title-informative"]


# --- photos: missing, shared icons, rendered attributes


def test_missing_photos_at_the_storefronts_rate(made):
    _, spec, store, catalog, _, _ = made
    missing = catalog.image_path.isna()
    assert _within(missing.mean(), spec.missing_image_rate, len(catalog)), missing.mean()
    assert missing.any() and not missing.all()
    files = {p.name for p in (store.out_dir / "images").iterdir()}
    assert files == {Path(p).name for p in catalog.image_path.dropna()}
    # A missing photo is an empty image path to the reader (text only for that product), not an error.
    read = load_catalog(store.catalog_path)
    assert int(read.image_path.isna().sum()) == int(missing.sum())


def test_textual_types_share_identical_stock_icons(made):
    _, spec, store, catalog, _, _ = made
    for ptype in spec.title_informative_types:
        rows = catalog[(catalog.product_type == ptype) & catalog.image_path.notna()]
        icons = {(store.out_dir / p).read_bytes() for p in rows.image_path}
        variants = spec.product_types[ptype].icon_variants
        assert len(icons) == variants, ptype
        # Every icon is shown by products whose attributes differ: the picture says nothing about them.
        for icon in icons:
            shown_by = rows[[(store.out_dir / p).read_bytes() == icon for p in rows.image_path]]
            for attr in spec.product_types[ptype].attributes:
                assert shown_by.true_attrs.map(lambda a, k=attr: a[k]).nunique() > 1, (ptype, attr)


def test_rendered_photos_show_only_the_drawn_attributes():
    for name in NEW:
        spec = storefront_spec(name)
        for ptype in [*spec.image_informative_types, *spec.mixed_types]:
            t = spec.product_types[ptype]
            base = {a: v[0] for a, v in t.attributes.items()}
            ref = np.asarray(render_product_image(ptype, base, seed=5, spec=spec), dtype=float)
            for attr, values in t.attributes.items():
                other = np.asarray(
                    render_product_image(ptype, {**base, attr: values[-1]}, seed=5, spec=spec), dtype=float
                )
                if attr in t.image_attributes:
                    assert np.abs(ref - other).mean() > 1.0, (name, ptype, attr)
                else:
                    assert np.array_equal(ref, other), (name, ptype, attr)


def test_photos_of_every_listing_are_rgb_of_the_right_size(made):
    name, _, store, catalog, _, _ = made
    for rel in catalog.image_path.dropna().iloc[::25]:
        with Image.open(store.out_dir / rel) as im:
            assert im.mode == "RGB" and im.size == (16, 16), rel


# --- titles and queries


def test_second_language_titles_and_queries(made):
    _, spec, _, catalog, pairs, queries = made
    (lang,) = spec.languages
    titled = catalog.language == lang.code
    assert _within(titled.mean(), lang.title_rate, len(catalog)), titled.mean()
    assert _within((queries.language == lang.code).mean(), lang.query_rate, len(queries))
    for _, row in catalog[titled].head(60).iterrows():
        nouns = lang.type_words[row.product_type].title_nouns
        assert any(n in row.title for n in nouns), row.title
    for _, row in queries[queries.language == lang.code].head(40).iterrows():
        nouns = lang.type_words[row.product_type].query_nouns
        assert any(row["query"].startswith(n) or f" {n}" in row["query"] for n in nouns), row["query"]
    # A query and its paraphrase in the other language share one intent (attributes stay canonical).
    lang_of = queries.set_index("query").language
    per_intent = pairs.drop_duplicates("query").assign(lang=lambda d: d["query"].map(lang_of))
    both = per_intent.groupby("intent").lang.nunique()
    assert (both > 1).sum() >= 5


def test_spec_titles_name_their_values(made):
    name, spec, _, catalog, _, _ = made
    found = total = 0
    for _, row in catalog.iterrows():
        t = spec.product_types[row.product_type]
        if t.title_kind != "spec":
            continue
        written = spec.in_language(row.language)
        for attr, value in row.true_attrs.items():
            if attr in t.image_attributes:
                continue
            total += 1
            found += written.title_spelling(value).lower() in row.title.lower()
    share = found / total
    if spec.title_drop_rate:  # values left out (and the odd typo) make the title silent about some
        assert 1 - spec.title_drop_rate - 0.1 < share < 1 - spec.title_drop_rate / 2, share
    else:
        assert share == 1.0, share


def test_marketing_titles_rarely_name_the_drawn_colour(made):
    _, spec, store, catalog, _, _ = made
    for ptype in spec.image_informative_types:
        assert store.meta()["title_attribute_mention_rate"][ptype] < 0.25, ptype


def test_typos_only_where_the_storefront_has_them(made):
    _, spec, _, catalog, _, _ = made
    brands = set(spec.vocabulary.tech_brands) | set(spec.vocabulary.fashion_brands)
    words = {w for t in catalog.title for w in t.split(" ")}
    # Brand names are written one way; a typo gives one of them a new spelling (two neighbouring letters swapped).
    misspelt = {w for w in words if w not in brands and any(_one_swap(w, b) for b in brands)}
    assert bool(misspelt) == bool(spec.title_typo_rate), sorted(misspelt)[:5]


def _one_swap(a: str, b: str) -> bool:
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


# --- duplicates, labels, intents


def test_duplicates_share_group_ids(made):
    _, _, store, catalog, _, _ = made
    sizes = catalog.group_id.value_counts()
    assert (sizes > 1).sum() > 10 and sizes.max() <= 3
    for gid in sizes[sizes > 1].index:
        g = catalog[catalog.group_id == gid]
        assert g.product_type.nunique() == 1 and g.attributes.nunique() == 1, gid
        assert g.seller.nunique() == len(g), gid
    assert store.meta()["duplicate_stats"]["groups_with_duplicates"] == int((sizes > 1).sum())


def test_labels_follow_type_and_attributes(made):
    _, _, _, catalog, pairs, queries = made
    info = catalog.set_index("product_id")
    q = queries.set_index("query")
    p = pairs.assign(
        ptype=pairs.product_id.map(info.product_type),
        pattrs=pairs.product_id.map(info.true_attrs),
        qtype=pairs["query"].map(q.product_type),
        qattrs=pairs["query"].map(q.attributes).map(json.loads),
    )
    assert set(p.label) == {"exact", "partial", "irrelevant"}
    for row in p.itertuples():
        if row.ptype != row.qtype:
            assert row.label == "irrelevant"
        else:
            match = all(row.pattrs[a] == v for a, v in row.qattrs.items())
            assert row.label == ("exact" if match else "partial"), row


def test_paraphrases_split_cleanly_by_intent(made):
    _, _, store, _, pairs, _ = made
    per_intent = pairs.groupby("intent")["query"].nunique()
    assert (per_intent > 1).sum() > 10  # intents written several ways
    catalog = load_catalog(store.catalog_path)
    read, _ = load_pairs(store.pairs_path, catalog=catalog)
    splits = split_by_query(read, seed=0, group_by="intent")
    sides = {name: set(df["intent"]) for name, df in splits.items()}
    assert not (sides["train"] & sides["test"]) and not (sides["train"] & sides["dev"])
    assert not (sides["dev"] & sides["test"])
    assert sum(len(df) for df in splits.values()) == len(pairs)


# --- selection, determinism, validation


def test_same_seed_same_bytes(made, tmp_path):
    name, _, store, _, _, _ = made
    again = generate_demo(tmp_path / "again", CONFIGS[name], progress=False)
    files = sorted(p.relative_to(store.out_dir) for p in store.out_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    for rel in files:
        assert (store.out_dir / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel


def _digest(name: str, store: DemoStorefront) -> str:
    spec = storefront_spec(name)
    digest = hashlib.sha256()
    for path in (store.catalog_path, store.pairs_path, store.queries_path):
        digest.update(pd.read_parquet(path).to_csv(index=False, lineterminator="\n").encode())
    catalog = pd.read_parquet(store.catalog_path)
    for rel in catalog.image_path.dropna().iloc[::10]:
        digest.update(np.asarray(Image.open(store.out_dir / rel).convert("RGB")).tobytes())
    ptype = spec.image_informative_types[0]
    attrs = {a: v[1] for a, v in spec.product_types[ptype].attributes.items()}
    digest.update(np.asarray(render_product_image(ptype, attrs, size=24, seed=4, photo=1, spec=spec)).tobytes())
    digest.update(render_icon(spec, spec.title_informative_types[0], 0, seed=4, size=24).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", NEW)
def test_small_storefront_is_unchanged(name, tmp_path):
    """If you change a storefront on purpose, bump GENERATOR_VERSION and update PINNED in the same commit."""
    config = DemoConfig(n_products=120, seed=7, image_size=16, storefront=name)
    store = generate_demo(tmp_path / "store", config, progress=False)
    assert _digest(name, store) == PINNED[name]


def test_unknown_storefront_is_refused():
    with pytest.raises(ValueError, match="unknown storefront 'nope'; known: demo, home_books, media_market"):
        DemoConfig(storefront="nope")
    with pytest.raises(ValueError, match="n_products must be >= 80"):
        DemoConfig(n_products=70, storefront="media_market")


def test_spec_validation_names_the_type():
    spec = storefront_spec("home_books")
    book = spec.product_types["book"]
    bad = dataclasses.replace(book, image_attributes=("genre",))
    with pytest.raises(ValueError, match="book: a shared icon draws nothing"):
        dataclasses.replace(spec, product_types={**spec.product_types, "book": bad})
    with pytest.raises(ValueError, match="has no language 'de'"):
        spec.in_language("de")
    too_many = dataclasses.replace(spec.languages[0], title_rate=0.6)
    with pytest.raises(ValueError, match=r"languages' title_rates must be >= 0 and sum to at most 1, got \[0.6, 0.6\]"):
        dataclasses.replace(spec, languages=(too_many, too_many))


def test_figures_for_a_named_storefront(made, tmp_path):
    name, spec, store, _, _, _ = made
    with Image.open(render_contact_sheet(store, tmp_path / "ex.png", per_type=2)) as im:
        assert im.size[1] == len(spec.product_types) * (16 * 2 + 58)
    with Image.open(render_attribute_sheet(tmp_path / "at.png", size=16, storefront=spec)) as im:
        assert im.size[1] == len(spec.image_informative_types) * (32 + 16 + 6)


def test_cli_data_demo_storefront_option(tmp_path):
    out = tmp_path / "hb"
    args = ["data", "demo", "--out", out, "--products", 80, "--image-size", 16, "--storefront", "home_books"]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, show(proc)
    assert json.loads((out / "meta.json").read_text())["config"]["storefront"] == "home_books"
    bad = cli(*args[:-1], "shoes", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown storefront 'shoes'; known: demo, home_books, media_market" in bad.stderr


def test_cli_help_names_every_storefront():
    from querylife.cli import STOREFRONT_HELP

    for name in STOREFRONTS:
        assert name in STOREFRONT_HELP, name
