"""check_dataset: every problem kind is found, counted and shown in the Markdown report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from querylife.data.errors import DataError
from querylife.data.validation import check_dataset


def make_dataset(tmp_path: Path) -> tuple[Path, Path]:
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (12, 12), (1, 2, 3)).save(img / "ok.png")
    (img / "zero.png").write_bytes(b"")
    (img / "junk.png").write_bytes(b"definitely not a png")
    catalog = pd.DataFrame(
        [
            ("p1", "Red dress", "Dress", "img/ok.png"),
            ("p2", "Blue dress", "dress", "img/zero.png"),
            ("p3", "Charger", "electronics", "img/junk.png"),
            ("p4", "Cable", "electronics", "img/missing.png"),
            ("p5", "", "electronics", "img/ok.png"),  # empty title
            ("p1", "Red dress again", "dress", None),  # duplicate id
            ("p6", "Lamp", "home", None),  # no image: fine
        ],
        columns=["product_id", "title", "product_type", "image_path"],
    )
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    pairs = pd.DataFrame(
        [
            ("red dress", "p1", "exact"),
            ("red dress", "p2", "partial"),
            ("red dress", "p5", "exact"),  # product with a bad row: not an "unknown product"
            ("charger", "p3", "irrelevant"),  # query without positive
            ("charger", "p4", "partial"),
            ("lamp", "p6", "exact"),
            ("lamp", "p99", "exact"),  # unknown product
            ("lamp", "p6", "maybe"),  # unknown label
            ("", "p6", "exact"),  # empty query
            ("red dress", "p1", "exact"),  # identical duplicate (warning)
        ],
        columns=["query", "product_id", "label"],
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    return tmp_path / "catalog.csv", tmp_path / "pairs.parquet"


def test_every_problem_kind_is_counted(tmp_path: Path) -> None:
    cat, pairs = make_dataset(tmp_path)
    rep = check_dataset(cat, pairs)
    assert not rep.ok()
    assert rep.counts == {
        "catalog: empty title": 1,
        "catalog: duplicate product_id": 1,
        "pairs: unknown product": 1,
        "pairs: unknown label": 1,
        "pairs: empty query": 1,
        "pairs: duplicate pair": 1,
        "pairs: query without positive": 1,
        "images: missing image file": 1,
        "images: corrupt image": 2,
    }
    assert rep.n_errors() == 8 and rep.n_warnings() == 2
    assert (rep.n_products, rep.n_products_ok, rep.n_pairs, rep.n_pairs_ok) == (7, 5, 10, 6)
    assert rep.n_queries == 3
    assert rep.label_scheme.startswith("exact_partial_irrelevant")
    assert rep.label_counts == {"exact": 3, "partial": 2, "irrelevant": 1}
    assert rep.product_type_counts == {"electronics": 2, "dress": 2, "home": 1}
    img = rep.images
    assert (img.n_ok, img.n_missing_path, img.n_missing_file, img.n_corrupt) == (1, 1, 1, 2)
    assert rep.queries_without_positive == ["charger"] and rep.n_queries_without_positive == 1
    assert rep.pairs_per_query == {"min": 1.0, "median": 2.0, "mean": 2.0, "max": 3.0}
    assert rep.positives_per_query["min"] == 0.0

    where = {(e.kind, e.row, e.field) for e in rep.errors}
    assert ("catalog: empty title", 5, "title") in where
    assert ("catalog: duplicate product_id", 6, "product_id") in where
    assert ("pairs: unknown product", 7, "product_id") in where
    assert ("pairs: unknown label", 8, "label") in where
    assert ("pairs: empty query", 9, "query") in where
    assert ("pairs: query without positive", 4, "label") in where
    assert ("images: missing image file", 4, "image_path") in where
    assert ("images: corrupt image", 2, "image_path") in where  # catalogue row of the product

    md = rep.to_markdown()
    for kind, n in rep.counts.items():
        assert f"| {kind} |" in md and f"| {n} |" in md
    assert "| catalog: empty title | error | 1 | 14.3% |" in md
    assert "| images: corrupt image | error | 2 | 50.0% |" in md
    assert "| exact | 2 | yes | 3 | 50.0% |" in md
    assert "Queries without any positive: 1 (33.3%)" in md
    assert "missing.png" in md and "0 bytes" in md

    d = rep.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["ok"] is False and d["images"]["n_corrupt"] == 2 and d["counts"] == rep.counts
    assert all("severity" in e for e in d["errors"])


def test_clean_dataset_is_ok(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    pd.DataFrame({"product_id": ["a", "b"], "title": ["x", "y"], "product_type": ["t", "t"],
                  "image_path": ["a.png", None]}).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame({"query": ["q", "q"], "product_id": ["a", "b"], "label": ["E", "I"]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    rep = check_dataset(tmp_path / "c.parquet", tmp_path / "p.csv")
    assert rep.ok() and rep.counts == {}
    # One query cannot fill train, dev and test: a warning about the settings, not a problem of the rows.
    assert rep.warnings() == ["split: training with these settings would stop: need at least 3 distinct queries to "
                              "fill the splits ['train', 'dev', 'test']; got 1"]
    md = rep.to_markdown()
    assert md.startswith("# Data check: OK, 1 warning\n\n## Warnings\n") and "None found (but see the warnings" in md
    rep = check_dataset(tmp_path / "c.parquet", tmp_path / "p.csv", split=(1.0, 0.0, 0.0))
    assert rep.ok() and not rep.warnings() and "# Data check: OK\n" in rep.to_markdown()
    assert "None found." in rep.to_markdown()
    only_catalog = check_dataset(tmp_path / "c.parquet")
    assert only_catalog.ok() and only_catalog.pairs_path is None
    assert "## Labels" not in only_catalog.to_markdown()


def test_images_can_be_skipped(tmp_path: Path) -> None:
    cat, pairs = make_dataset(tmp_path)
    rep = check_dataset(cat, pairs, check_images=False)
    assert not any(k.startswith("images:") for k in rep.counts)
    assert rep.images.checked is False and rep.images.n_with_path == 4 and rep.images.n_ok == 0
    assert "files not checked" in rep.to_markdown()


def test_max_examples_caps_examples_not_counts(tmp_path: Path) -> None:
    n = 30
    pd.DataFrame({"product_id": ["a"] * n, "title": ["x"] * n, "product_type": ["t"] * n}).to_csv(
        tmp_path / "c.csv", index=False
    )
    rep = check_dataset(tmp_path / "c.csv", max_examples=3)
    assert rep.counts == {"catalog: duplicate product_id": n - 1}
    assert len(rep.errors) == 3


def test_unreadable_or_columnless_files_raise(tmp_path: Path) -> None:
    (tmp_path / "c.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match="c.parquet"):
        check_dataset(tmp_path / "c.parquet")
    pd.DataFrame({"product_id": ["a"], "title": ["x"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match="product_type"):
        check_dataset(tmp_path / "c.csv")
    pd.DataFrame({"product_id": ["a"], "title": ["x"], "product_type": ["t"]}).to_csv(
        tmp_path / "ok.csv", index=False
    )
    pd.DataFrame({"query": ["q"], "product_id": ["a"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(DataError, match="'label'"):
        check_dataset(tmp_path / "ok.csv", tmp_path / "p.csv")


def test_undecidable_labels_are_reported_not_raised(tmp_path: Path) -> None:
    pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["x"] * 3, "product_type": ["t"] * 3}).to_csv(
        tmp_path / "c.csv", index=False
    )
    pd.DataFrame({"query": ["q"] * 3, "product_id": ["a", "b", "c"], "label": ["E", "S", "weird"]}).to_csv(
        tmp_path / "p.csv", index=False
    )
    rep = check_dataset(tmp_path / "c.csv", tmp_path / "p.csv")
    assert rep.label_scheme.startswith("esci")
    assert rep.counts == {"pairs: unknown label": 1}
