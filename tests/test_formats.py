"""Readers for the public relevance data sets (CrowdFlower, Amazon ESCI, Wayfair WANDS) and the querylife layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from querylife.data.errors import BadRows, DataError, UnknownLabelError
from querylife.data.formats import (
    ESCI_EXAMPLES_FILE,
    ESCI_PRODUCTS_FILE,
    FORMATS,
    LoadedData,
    crowdflower_product_id,
    detect_format,
    load_format,
)
from querylife.data.prepare import to_dataset

REAL_CROWDFLOWER = Path("/work/shared/data/crowdflower/search_relevance.csv")

CF_HEADER = ["id", "query", "product_title", "product_description", "median_relevance", "relevance_variance"]
CF_ROWS = [
    ["1", "red dress", "Summer Dress  Red", "A light dress.\nMachine washable,\n\"cotton\".", "4", "0"],
    # The same listing under another query, with other spacing and case: one product id.
    ["2", "summer  dress", "summer dress red", "a light   dress. machine washable, \"cotton\".", "3", "0.471"],
    ["3", "red dress", "Blue Jeans", "", "1", "0"],
    ["4", "usb cable", "USB-C cable 2m", "Braided.", "2", "0.5"],
    # The same (query, product) judged twice with different grades: merged, the lower grade kept.
    ["5", "usb cable", "USB-C Cable 2m", "braided.", "4", "0"],
]


def write_crowdflower(path: Path, rows: list[list[str]] = CF_ROWS, header: list[str] = CF_HEADER) -> Path:
    """Every field quoted, as in the original release."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_esci(d: Path, *, untitled: bool = False) -> Path:
    """Two locales sharing a product id, small/large flags, both official splits."""
    d.mkdir(parents=True, exist_ok=True)
    ex = pd.DataFrame(
        [
            # example_id, query, query_id, product_id, locale, label, small, large, split
            (0, "usb c cable", 10, "B01", "us", "E", 1, 1, "train"),
            (1, "usb c cable", 10, "B02", "us", "S", 1, 1, "train"),
            (2, "phone case", 11, "B03", "us", "I", 1, 1, "train"),
            (3, "phone case", 11, "B01", "us", "C", 1, 1, "train"),
            (4, "charger 65w", 12, "B04", "us", "E", 1, 1, "train"),
            (5, "charger 65w", 12, "B02", "us", "I", 1, 1, "train"),
            (6, "power bank", 13, "B05", "us", "E", 1, 1, "test"),
            (7, "power bank", 13, "B04", "us", "S", 1, 1, "test"),
            (8, "laptop stand", 14, "B06", "us", "E", 0, 1, "train"),  # large version only
            (9, "cable usb c", 20, "B01", "es", "E", 1, 1, "train"),  # same product id, Spanish listing
            (10, "funda movil", 21, "B07", "es", "I", 1, 1, "test"),
        ],
        columns=["example_id", "query", "query_id", "product_id", "product_locale", "esci_label", "small_version",
                 "large_version", "split"],
    )
    prod = pd.DataFrame(
        [
            ("B01", "USB-C cable 2m", "<p>Braided</p>", "fast charge", "Anker", "black", "us"),
            ("B02", "USB-C cable 1m", None, None, "Anker", None, "us"),
            ("B03", None if untitled else "Phone case X", "", "", "Spigen", "", "us"),
            ("B04", "65W charger", "GaN", "", "Ugreen", "white", "us"),
            ("B05", "Power bank 20000mAh", "", "", "Anker", "blue", "us"),
            ("B06", "Laptop stand", "", "", "", "", "us"),
            ("B09", "Unused product", "", "", "", "", "us"),
            ("B01", "Cable USB-C 2m", "trenzado", "", "Anker", "negro", "es"),
            ("B07", "Funda movil", "", "", "", "", "es"),
        ],
        columns=["product_id", "product_title", "product_description", "product_bullet_point", "product_brand",
                 "product_color", "product_locale"],
    )
    ex.to_parquet(d / ESCI_EXAMPLES_FILE, index=False)
    prod.to_parquet(d / ESCI_PRODUCTS_FILE, index=False)
    return d


def write_wands(d: Path) -> Path:
    """Tab-separated with .csv names and the 'category hierarchy' header (with a space), as released."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "query.csv").write_text(
        "query_id\tquery\tquery_class\n0\tsalon chair\tMassage Chairs\n1\tsmart coffee table\tCoffee Tables\n"
    )
    (d / "product.csv").write_text(
        "product_id\tproduct_name\tproduct_class\tcategory hierarchy\tproduct_description\tproduct_features\t"
        "rating_count\taverage_rating\treview_count\n"
        "0\tsalon massage chair\tMassage Chairs\tFurniture / Chairs\tcomfy, adjustable\tcolor:black|material:pu\t"
        "15\t4.5\t15\n"
        "1\tsmart coffee table\tCoffee Tables\tFurniture / Tables\t\tsmart:yes\t\t\t\n"
        "2\tbean bag\t\tFurniture\t\t\t\t\t\n"
    )
    (d / "label.csv").write_text(
        "id\tquery_id\tproduct_id\tlabel\n0\t0\t0\tExact\n1\t0\t2\tIrrelevant\n2\t1\t1\tExact\n3\t1\t0\tPartial\n"
    )
    return d


def write_querylife(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"product_id": ["p1", "p2", "p3"], "title": ["red dress", "blue jeans", "usb cable"],
                  "product_type": ["dress", "jeans", "cable"]}).to_csv(d / "catalog.csv", index=False)
    pd.DataFrame({"query": ["red dress", "red dress", "cable", "jeans"], "product_id": ["p1", "p2", "p3", "p2"],
                  "label": ["3", "0", "2", "3"]}).to_csv(d / "pairs.csv", index=False)
    return d


# ----------------------------------------------------------------------------------------------------------
# Detection


def test_detect_each_format(tmp_path: Path) -> None:
    (tmp_path / "cf").mkdir()
    cf = write_crowdflower(tmp_path / "cf" / "train.csv")
    esci = write_esci(tmp_path / "esci" / "shopping_queries_dataset")
    wands = write_wands(tmp_path / "wands" / "dataset")
    ql = write_querylife(tmp_path / "ql")
    assert detect_format(cf) == "crowdflower"
    assert detect_format(cf.parent) == "crowdflower"  # a directory holding one CrowdFlower CSV
    assert detect_format(esci) == "esci"
    assert detect_format(tmp_path / "esci") == "esci"  # the release's root, files in shopping_queries_dataset/
    assert detect_format(esci / ESCI_EXAMPLES_FILE) == "esci"
    assert detect_format(wands) == "wands"
    assert detect_format(tmp_path / "wands") == "wands"  # the repository root, files in dataset/
    assert detect_format(wands / "label.csv") == "wands"
    assert detect_format(ql) == "querylife"


def test_detect_unknown_file_and_directory(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(DataError) as err:
        detect_format(other)
    assert str(other) in str(err.value) and "['a', 'b']" in str(err.value)

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,product_id,label\nq,p,1\n")
    with pytest.raises(DataError, match="querylife pairs table"):
        detect_format(pairs)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        detect_format(empty)
    assert str(empty) in str(err.value) and "notes.txt" in str(err.value)

    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------------
# CrowdFlower


def test_crowdflower_load(tmp_path: Path) -> None:
    path = write_crowdflower(tmp_path / "cf.csv")
    report = BadRows()
    data = load_format(path, report=report)
    assert data.format == "crowdflower"
    cat, pairs = data.catalog, data.pairs
    assert list(cat.columns[:6]) == ["product_id", "title", "product_type", "image_path", "attributes", "group_id"]
    assert list(pairs.columns[:5]) == ["query", "product_id", "label", "gain", "positive"]

    dress = crowdflower_product_id("Summer Dress  Red", "A light dress.\nMachine washable,\n\"cotton\".")
    assert dress.startswith("cf-") and len(dress) == 3 + 12
    assert len(cat) == 3 and cat["product_id"].is_unique  # dress, jeans, cable
    row = cat.set_index("product_id").loc[dress]
    assert row["title"] == "Summer Dress Red"  # as first written, whitespace collapsed (data.titles)
    assert row["description"] == "A light dress.\nMachine washable,\n\"cotton\"."  # multi-line field intact
    assert row["product_type"] == "unknown" and row["image_path"] is None

    by = pairs.set_index(["query", "product_id"])
    assert by.loc[("red dress", dress), "gain"] == 3.0 and by.loc[("red dress", dress), "positive"]
    assert by.loc[("summer dress", dress), "label"] == "3"  # query whitespace collapsed
    assert by.loc[("summer dress", dress), "positive"]  # 3 >= relevant_min 3
    assert by.loc[("summer dress", dress), "relevance_variance"] == pytest.approx(0.471)
    assert pairs["gain"].tolist() == [3.0, 2.0, 0.0, 1.0]
    # The two judgements of (usb cable, USB-C cable) are one pair with the lower grade.
    cable = pairs[pairs["query"] == "usb cable"]
    assert len(cable) == 1 and cable["label"].iloc[0] == "2" and cable["example_id"].iloc[0] == "4"
    assert data.source["merged_duplicates"] == 1 and report.counts["conflicting duplicate"] == 1
    assert set(pairs["product_id"]) <= set(cat["product_id"])
    assert data.label_scheme.positive == frozenset({"3", "4"})


def test_crowdflower_ids_are_stable_and_relevant_min(tmp_path: Path) -> None:
    a = crowdflower_product_id("Red  Dress", "Cotton\nsummer")
    assert a == crowdflower_product_id(" red dress ", "cotton summer")
    assert a != crowdflower_product_id("Red Dress", "")
    assert crowdflower_product_id("a b", "") != crowdflower_product_id("a", "b")
    path = write_crowdflower(tmp_path / "cf.csv")
    first, second = load_format(path), load_format(path, relevant_min=4)
    assert first.catalog["product_id"].tolist() == second.catalog["product_id"].tolist()
    assert second.pairs["positive"].tolist() == [True, False, False, False]
    with pytest.raises(DataError, match="relevant_min"):
        load_format(path, relevant_min=5)


def test_crowdflower_bad_rows(tmp_path: Path) -> None:
    rows = [*CF_ROWS, ["6", "lamp", "Desk lamp", "", "5", "0"], ["7", "lamp", "", "no title", "2", "0"]]
    path = write_crowdflower(tmp_path / "cf.csv", rows)
    with pytest.raises(UnknownLabelError) as err:
        load_format(path)
    assert str(path) in str(err.value) and "row 6" in str(err.value) and "'5'" in str(err.value)
    report = BadRows()
    data = load_format(path, skip_bad=True, report=report)
    assert report.counts["unknown label"] == 1 and report.counts["empty title"] == 1
    assert "lamp" not in set(data.pairs["query"])


# ----------------------------------------------------------------------------------------------------------
# ESCI


def test_esci_locale_version_gains(tmp_path: Path) -> None:
    d = write_esci(tmp_path / "esci")
    us = load_format(d)
    assert us.format == "esci" and us.source["locale"] == "us" and us.source["version"] == "small"
    assert len(us.pairs) == 8 and set(us.pairs["split"]) == {"train", "test"}
    assert "laptop stand" not in set(us.pairs["query"])  # large version only
    cat = us.catalog.set_index("product_id")
    assert cat.loc["B01", "title"] == "USB-C cable 2m"  # the us listing, not the Spanish one
    assert set(cat.index) == {"B01", "B02", "B03", "B04", "B05"}  # only products the kept examples use
    assert cat.loc["B01", "description"] == "<p>Braided</p>" and cat.loc["B01", "bullet_points"] == "fast charge"
    assert cat.loc["B01", "brand"] == "Anker" and cat.loc["B04", "color"] == "white"
    assert cat.loc["B02", "description"] == ""  # missing text -> ""
    gains = dict(zip(us.pairs["label"], us.pairs["gain"], strict=True))
    assert gains == {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
    assert us.pairs.loc[us.pairs["positive"], "label"].unique().tolist() == ["E"]
    assert us.pairs["query_id"].iloc[0] == "10" and us.pairs["example_id"].iloc[0] == "0"

    large = load_format(d / ESCI_EXAMPLES_FILE, version="large")
    assert len(large.pairs) == 9 and "B06" in set(large.catalog["product_id"])

    es = load_format(d, locale="es")
    assert es.catalog.set_index("product_id").loc["B01", "title"] == "Cable USB-C 2m"
    assert set(es.pairs["query"]) == {"cable usb c", "funda movil"}

    custom = load_format(d, esci_gains={"S": 0.5, "complement": 0.2})
    assert dict(zip(custom.pairs["label"], custom.pairs["gain"], strict=True))["S"] == 0.5
    assert custom.label_scheme.gains["C"] == 0.2
    with pytest.raises(DataError, match="esci_gains"):
        load_format(d, esci_gains={"X": 1.0})
    with pytest.raises(DataError, match="locales found"):
        load_format(d, locale="jp")
    with pytest.raises(DataError, match="version"):
        load_format(d, version="medium")


def test_esci_product_without_title(tmp_path: Path) -> None:
    d = write_esci(tmp_path / "esci", untitled=True)
    with pytest.raises(DataError) as err:
        load_format(d)
    assert "B03" in str(err.value) and ESCI_PRODUCTS_FILE in str(err.value)
    report = BadRows()
    data = load_format(d, skip_bad=True, report=report)
    assert "B03" not in set(data.catalog["product_id"]) and "B03" not in set(data.pairs["product_id"])
    assert report.counts["empty title"] == 1 and report.counts["product without title"] == 1
    assert len(data.pairs) == 7


def test_to_dataset_honours_official_split(tmp_path: Path) -> None:
    data = load_format(write_esci(tmp_path / "esci"))
    ds = to_dataset(data, split=(0.5, 0.5, 0.0), split_seed=1, text_fields=("title", "brand"))
    assert set(ds.splits["test"]["query"]) == {"power bank"}  # exactly the official test queries
    train_q, dev_q = set(ds.splits["train"]["query"]), set(ds.splits["dev"]["query"])
    assert train_q and dev_q and not train_q & dev_q
    assert train_q | dev_q == {"usb c cable", "phone case", "charger 65w"}
    assert sum(len(s) for s in ds.splits.values()) == len(data.pairs)
    assert ds.images.shape == (len(data.catalog), 3, 64, 64) and int(ds.images.sum()) == 0
    assert not ds.has_image.any()
    assert ds.product_texts()[0] == "USB-C cable 2m | Anker"
    assert {"product_type", "query_type"} <= set(ds.splits["train"].columns)
    # official_split=False: a random split by query over everything.
    random = to_dataset(data, split=(0.5, 0.25, 0.25), official_split=False)
    assert sum(len(s) for s in random.splits.values()) == len(data.pairs)


def test_to_dataset_official_split_edge_cases(tmp_path: Path) -> None:
    data = load_format(write_esci(tmp_path / "esci"))
    # A query in both official splits goes wholly to test (never trained on).
    pairs = data.pairs.copy()
    pairs.loc[pairs["query"] == "phone case", "split"] = ["train", "test"]
    ds = to_dataset(LoadedData(data.catalog, pairs, data.label_scheme, "esci", data.source), split=(0.5, 0.5, 0))
    assert set(ds.splits["test"]["query"]) == {"power bank", "phone case"}
    assert "phone case" not in set(ds.splits["train"]["query"]) | set(ds.splits["dev"]["query"])
    # An official dev split is used as it is.
    pairs = data.pairs.copy()
    pairs.loc[pairs["query"] == "charger 65w", "split"] = "validation"
    ds = to_dataset(LoadedData(data.catalog, pairs, data.label_scheme, "esci", data.source))
    assert set(ds.splits["dev"]["query"]) == {"charger 65w"}
    assert set(ds.splits["train"]["query"]) == {"usb c cable", "phone case"}
    # Values other than train/dev/test are refused.
    pairs["split"] = "fold1"
    with pytest.raises(DataError, match="fold1"):
        to_dataset(LoadedData(data.catalog, pairs, data.label_scheme, "esci", data.source))


def test_to_dataset_random_split_for_crowdflower(tmp_path: Path) -> None:
    rows = [[str(i), f"query {i % 5}", f"Title {i}", f"desc {i}", str(1 + i % 4), "0"] for i in range(20)]
    data = load_format(write_crowdflower(tmp_path / "cf.csv", rows))
    ds = to_dataset(data, split=(0.6, 0.2, 0.2), text_fields=("title", "description"))
    assert [s["query"].nunique() for s in ds.splits.values()] == [3, 1, 1]
    assert ds.product_texts(ds.rows([data.pairs["product_id"].iloc[0]]))[0] == "Title 0 | desc 0"
    with pytest.raises(DataError, match="text field"):
        to_dataset(data, text_fields=("title", "brand"))


# ----------------------------------------------------------------------------------------------------------
# WANDS and querylife


def test_wands_load(tmp_path: Path) -> None:
    data = load_format(write_wands(tmp_path / "wands"))
    cat = data.catalog.set_index("product_id")
    assert data.format == "wands" and len(cat) == 3  # unlabelled products stay in the catalogue
    assert cat.loc["0", "title"] == "salon massage chair" and cat.loc["0", "product_type"] == "massage chairs"
    assert cat.loc["2", "product_type"] == "unknown"
    assert cat.loc["0", "category"] == "Furniture / Chairs" and cat.loc["0", "description"] == "comfy, adjustable"
    assert cat.loc["0", "features"] == "color:black|material:pu"
    assert json.loads(cat.loc["0", "attributes"]) == {"color": "black", "material": "pu"}
    assert cat.loc["2", "attributes"] is None
    p = data.pairs
    assert p["query"].tolist() == ["salon chair", "salon chair", "smart coffee table", "smart coffee table"]
    assert p["label"].tolist() == ["Exact", "Irrelevant", "Exact", "Partial"]
    assert p["gain"].tolist() == [2.0, 0.0, 2.0, 1.0] and p["positive"].tolist() == [True, False, True, False]
    assert p["query_class"].iloc[0] == "Massage Chairs" and p["query_id"].iloc[2] == "1"


def test_querylife_directory(tmp_path: Path) -> None:
    data = load_format(write_querylife(tmp_path / "ql"))
    assert data.format == "querylife" and len(data.catalog) == 3 and len(data.pairs) == 4
    assert data.label_scheme.name == "graded"
    ds = to_dataset(data, split=(0.34, 0.33, 0.33))
    assert sum(len(s) for s in ds.splits.values()) == 4


# ----------------------------------------------------------------------------------------------------------
# Errors


def test_wrong_format_errors_name_file_and_columns(tmp_path: Path) -> None:
    cf = write_crowdflower(tmp_path / "cf.csv")
    with pytest.raises(DataError) as err:
        load_format(cf, format="esci")
    msg = str(err.value)
    assert "cf.csv" in msg and "esci_label" in msg and "product_title" in msg  # expected and found columns

    wands = write_wands(tmp_path / "wands")
    with pytest.raises(DataError) as err:
        load_format(wands / "label.csv", format="crowdflower")
    msg = str(err.value)
    assert "label.csv" in msg and "median_relevance" in msg and "'label'" in msg

    with pytest.raises(DataError) as err:
        load_format(tmp_path, format="wands")
    assert "query.csv" in str(err.value) and "cf.csv" in str(err.value)

    (wands / "product.csv").write_text("id\tname\n1\tx\n")
    with pytest.raises(DataError) as err:
        load_format(wands, format="wands")
    assert "product.csv" in str(err.value) and "product_name" in str(err.value) and "'name'" in str(err.value)


def test_unknown_format_name_and_misplaced_options(tmp_path: Path) -> None:
    cf = write_crowdflower(tmp_path / "cf.csv")
    with pytest.raises(DataError) as err:
        load_format(cf, format="msmarco")
    assert "msmarco" in str(err.value) and all(f in str(err.value) for f in FORMATS)
    with pytest.raises(DataError, match="esci_gains"):
        load_format(cf, esci_gains={"E": 1.0})


# ----------------------------------------------------------------------------------------------------------
# The real file


def test_real_crowdflower_head(tmp_path: Path) -> None:
    if not REAL_CROWDFLOWER.is_file():
        pytest.skip(f"{REAL_CROWDFLOWER} not available")
    # Take whole CSV records (descriptions span lines), not text lines.
    with open(REAL_CROWDFLOWER, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [next(reader) for _ in range(300)]
    path = write_crowdflower(tmp_path / "head.csv", rows, header)
    report = BadRows()
    data = load_format(path, report=report)
    assert report.n_rows == 300
    assert len(data.pairs) + data.source["merged_duplicates"] == 300
    assert data.pairs["query"].nunique() == len({r[1] for r in rows})
    assert data.catalog["product_id"].is_unique
    assert set(data.pairs["product_id"]) <= set(data.catalog["product_id"])
    assert set(data.pairs["label"]) <= {"1", "2", "3", "4"}
    assert data.pairs["positive"].tolist() == (data.pairs["label"].astype(int) >= 3).tolist()
    assert any("\n" in d for d in data.catalog["description"])  # multi-line descriptions survived
