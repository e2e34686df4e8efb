"""Readers and label schemes: round trips and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from querylife.data.errors import DataError, UnknownLabelError
from querylife.data.labels import LABEL_SCHEMES, make_label_scheme
from querylife.data.readers import BadRows, load_catalog, load_pairs, read_table

CATALOG_ROWS = [
    {"product_id": "007", "title": "  Red shoe ", "product_type": " Shoes", "image_path": "img/a.png",
     "attributes": '{"colour": "red"}', "group_id": "g1", "price": "9.5"},
    {"product_id": "p2", "title": "Blue shirt", "product_type": "shirt", "image_path": "",
     "attributes": "", "group_id": "", "price": "12"},
    {"product_id": "p3", "title": "Phone charger", "product_type": "Electronics", "image_path": "/abs/c.jpg",
     "attributes": "free text", "group_id": "g1", "price": "3"},
]


def write(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` in the format given by the extension (all cells as text, as a user's file would be)."""
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for rec in df.to_dict("records"):
                f.write(json.dumps(rec) + "\n")
    return path


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".jsonl"])
def test_catalog_round_trip(tmp_path: Path, ext: str) -> None:
    path = write(pd.DataFrame(CATALOG_ROWS), tmp_path / f"catalog{ext}")
    cat = load_catalog(path)
    expected = ["product_id", "title", "product_type", "image_path", "attributes", "group_id"]
    assert list(cat.columns[:6]) == expected
    assert "price" in cat.columns  # extras kept
    assert cat["product_id"].tolist() == ["007", "p2", "p3"]  # leading zeros survive CSV
    assert cat["title"].tolist() == ["Red shoe", "Blue shirt", "Phone charger"]
    assert cat["product_type"].tolist() == ["shoes", "shirt", "electronics"]
    assert cat["image_path"].tolist() == [str(tmp_path / "img" / "a.png"), None, "/abs/c.jpg"]
    assert json.loads(cat["attributes"][0]) == {"colour": "red"}
    assert cat["attributes"][1] is None
    assert json.loads(cat["attributes"][2]) == "free text"
    assert cat["group_id"].tolist() == ["g1", None, "g1"]


def test_read_table_formats_and_explicit_format(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    p = tmp_path / "data.txt"
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="cannot tell the file format"):
        read_table(p)
    assert read_table(p, format="csv")["b"].tolist() == ["x", "y"]
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert read_table(arr)["a"].tolist() == [1, 2]
    gz = tmp_path / "data.csv.gz"
    df.to_csv(gz, index=False)
    assert read_table(gz)["b"].tolist() == ["x", "y"]


def test_jsonl_integer_ids_with_gaps_stay_exact(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"product_id": 9007199254740993, "title": "a", "product_type": "t"}\n'
                 '\n'
                 '{"product_id": 2, "title": "b", "product_type": "t", "group_id": 5}\n')
    cat = load_catalog(p)
    assert cat["product_id"].tolist() == ["9007199254740993", "2"]
    assert cat["group_id"].tolist() == [None, "5"]


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found") as ei:
        load_catalog(tmp_path / "nope.parquet")
    assert "nope.parquet" in str(ei.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(empty)


def test_missing_column_names_column_and_file(tmp_path: Path) -> None:
    path = write(pd.DataFrame(CATALOG_ROWS).drop(columns=["title"]), tmp_path / "cat.csv")
    with pytest.raises(DataError) as ei:
        load_catalog(path)
    msg = str(ei.value)
    assert "cat.csv" in msg and "'title'" in msg and "product_id" in msg  # found columns listed
    assert ei.value.field == "title"
    with pytest.raises(DataError, match="missing required column 'title'"):
        load_catalog(path, skip_bad=True)  # a missing column is never skippable


def test_duplicate_id_names_both_rows(tmp_path: Path) -> None:
    rows = [*CATALOG_ROWS, {**CATALOG_ROWS[1], "title": "Other"}]
    path = write(pd.DataFrame(rows), tmp_path / "cat.csv")
    with pytest.raises(DataError) as ei:
        load_catalog(path)
    e = ei.value
    assert e.row == 4 and e.field == "product_id" and e.line == 5
    assert "'p2'" in str(e) and "row 2" in str(e) and "row 4" in str(e)


def test_empty_title_names_row_and_field(tmp_path: Path) -> None:
    rows = [dict(r) for r in CATALOG_ROWS]
    rows[2]["title"] = "   "
    for ext, line in ((".csv", 4), (".parquet", None), (".jsonl", 3)):
        path = write(pd.DataFrame(rows), tmp_path / f"cat{ext}")
        with pytest.raises(DataError) as ei:
            load_catalog(path)
        assert ei.value.row == 3 and ei.value.field == "title" and ei.value.line == line
        assert f"cat{ext}" in str(ei.value) and "row 3" in str(ei.value) and "'title'" in str(ei.value)


def test_csv_line_numbers_follow_multiline_cells(tmp_path: Path) -> None:
    p = tmp_path / "cat.csv"
    p.write_text('product_id,title,product_type\np1,"two\nlines",t\n\np2,,t\n')
    with pytest.raises(DataError) as ei:
        load_catalog(p)
    assert ei.value.row == 2 and ei.value.line == 5


def test_empty_id_and_type(tmp_path: Path) -> None:
    rows = [dict(r) for r in CATALOG_ROWS]
    rows[0]["product_type"] = ""
    with pytest.raises(DataError) as ei:
        load_catalog(write(pd.DataFrame(rows), tmp_path / "a.csv"))
    assert ei.value.field == "product_type" and ei.value.row == 1
    rows = [dict(r) for r in CATALOG_ROWS]
    rows[1]["product_id"] = " "
    with pytest.raises(DataError) as ei:
        load_catalog(write(pd.DataFrame(rows), tmp_path / "b.csv"))
    assert ei.value.field == "product_id" and ei.value.row == 2


def test_catalog_skip_bad_counts(tmp_path: Path) -> None:
    rows = [dict(r) for r in CATALOG_ROWS]
    rows[1]["title"] = ""
    rows += [{**CATALOG_ROWS[0], "title": "dup"}, {**CATALOG_ROWS[2], "product_id": "p4", "product_type": ""}]
    path = write(pd.DataFrame(rows), tmp_path / "cat.parquet")
    report = BadRows()
    cat = load_catalog(path, skip_bad=True, report=report)
    assert cat["product_id"].tolist() == ["007", "p3"]
    assert cat["title"][0] == "Red shoe"  # first copy of the duplicate kept
    assert dict(report.counts) == {"empty title": 1, "duplicate product_id": 1, "empty product_type": 1}
    assert report.n_rows == 5
    assert report.summary().startswith("skipped 3 of 5 rows (60.0%): ")
    assert "empty title 1" in report.summary()
    assert {e["row"] for e in report.examples} == {2, 4, 5}


def test_duplicate_keeps_the_good_copy(tmp_path: Path) -> None:
    rows = [{**CATALOG_ROWS[0], "title": ""}, CATALOG_ROWS[0]]
    cat = load_catalog(write(pd.DataFrame(rows), tmp_path / "c.csv"), skip_bad=True)
    assert cat["title"].tolist() == ["Red shoe"]


def test_corrupt_jsonl_line(tmp_path: Path) -> None:
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"query": "a", "product_id": "p", "label": "1"}\n\n{"query": "b", "product_id": \n')
    with pytest.raises(DataError) as ei:
        read_table(p)
    assert ei.value.line == 3 and "line 3" in str(ei.value) and "pairs.jsonl" in str(ei.value)
    p.write_text('{"query": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2: not a JSON object"):
        read_table(p)


def test_corrupt_parquet_and_csv(tmp_path: Path) -> None:
    p = tmp_path / "cat.parquet"
    p.write_bytes(b"PAR1 this is not really parquet \x00\x01\x02")
    with pytest.raises(DataError) as ei:
        load_catalog(p)
    assert "cat.parquet" in str(ei.value) and "cannot read parquet" in str(ei.value)
    good = tmp_path / "good.parquet"
    pd.DataFrame(CATALOG_ROWS).to_parquet(good)
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="trunc.parquet"):
        load_catalog(trunc)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("product_id,title,product_type\np1,a,t\np2,b,t,extra,cells\n")
    with pytest.raises(DataError, match="bad.csv"):
        load_catalog(bad_csv)


# ---------------------------------------------------------------------------------------------------------
# pairs


@pytest.fixture()
def catalog(tmp_path: Path) -> pd.DataFrame:
    return load_catalog(write(pd.DataFrame(CATALOG_ROWS), tmp_path / "catalog.parquet"))


def pairs_file(tmp_path: Path, rows: list[tuple], ext: str = ".csv", name: str = "pairs") -> Path:
    df = pd.DataFrame(rows, columns=["query", "product_id", "label"])
    return write(df, tmp_path / f"{name}{ext}")


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".jsonl"])
def test_pairs_round_trip(tmp_path: Path, catalog: pd.DataFrame, ext: str) -> None:
    rows = [("  red   shoe ", "007", "E"), ("red shoe", "p2", "substitute"), ("charger", "p3", "i")]
    pairs, scheme = load_pairs(pairs_file(tmp_path, rows, ext), catalog=catalog)
    assert scheme.name == "esci"
    assert pairs["query"].tolist() == ["red shoe", "red shoe", "charger"]
    assert pairs["label"].tolist() == ["E", "substitute", "i"]  # as given
    assert pairs["gain"].tolist() == [1.0, 0.1, 0.0]
    assert pairs["positive"].tolist() == [True, False, False]
    assert pairs["positive"].dtype == bool


def test_pairs_extra_columns_kept(tmp_path: Path) -> None:
    df = pd.DataFrame({"query": ["a", "b"], "product_id": ["p1", "p2"], "label": [1, 0], "clicks": [3, 0]})
    pairs, scheme = load_pairs(write(df, tmp_path / "p.parquet"))
    assert scheme.name == "binary" and pairs["clicks"].tolist() == [3, 0]
    assert pairs["label"].tolist() == ["1", "0"]


def test_unknown_label_names_value_and_allowed(tmp_path: Path) -> None:
    path = pairs_file(tmp_path, [("a", "p2", "exact"), ("b", "p3", "maybe")])
    with pytest.raises(DataError) as ei:
        load_pairs(path, label_scheme="exact_partial_irrelevant")
    e = ei.value
    assert isinstance(e, KeyError)
    assert e.row == 2 and e.field == "label"
    assert "'maybe'" in str(e) and "exact" in str(e) and "partial" in str(e)


def test_undecidable_scheme_names_value_and_row(tmp_path: Path) -> None:
    path = pairs_file(tmp_path, [("a", "p2", "E"), ("b", "p3", "S"), ("c", "p3", "maybe")])
    with pytest.raises(DataError) as ei:
        load_pairs(path)
    assert "'maybe'" in str(ei.value) and ei.value.row == 3 and "label_scheme" in str(ei.value)


def test_unknown_product(tmp_path: Path, catalog: pd.DataFrame) -> None:
    path = pairs_file(tmp_path, [("a", "p2", "1"), ("b", "zz", "0")])
    with pytest.raises(DataError) as ei:
        load_pairs(path, catalog=catalog)
    assert ei.value.row == 2 and ei.value.field == "product_id" and "'zz'" in str(ei.value)
    pairs, _ = load_pairs(path)  # without a catalogue nothing to check against
    assert len(pairs) == 2


def test_empty_query(tmp_path: Path) -> None:
    path = pairs_file(tmp_path, [("a", "p2", "1"), ("   ", "p3", "0")])
    with pytest.raises(DataError) as ei:
        load_pairs(path)
    assert ei.value.row == 2 and ei.value.field == "query"


def test_conflicting_and_identical_duplicates(tmp_path: Path) -> None:
    rows = [("a", "p2", "1"), ("a ", "p2", "true"), ("b", "p3", "1"), ("b", "p3", "0")]
    path = pairs_file(tmp_path, rows)
    with pytest.raises(DataError) as ei:
        load_pairs(path)
    assert ei.value.field == "label" and "row 3" in str(ei.value) and "row 4" in str(ei.value)
    report = BadRows()
    pairs, _ = load_pairs(path, skip_bad=True, report=report)
    assert pairs[["query", "product_id"]].values.tolist() == [["a", "p2"]]  # "1" and "true" agree; b dropped
    assert dict(report.counts) == {"duplicate pair": 1, "conflicting labels": 2}
    # Identical duplicates alone are merged even in strict mode.
    pairs, _ = load_pairs(pairs_file(tmp_path, rows[:3], name="p2"))
    assert len(pairs) == 2


def test_pairs_skip_bad_counts(tmp_path: Path, catalog: pd.DataFrame) -> None:
    rows = [("a", "007", "exact"), ("", "p2", "partial"), ("b", "zz", "exact"), ("c", "p3", "meh"),
            ("d", "p3", "irrelevant"), ("e", "p3", "")]
    report = BadRows()
    pairs, scheme = load_pairs(
        pairs_file(tmp_path, rows), catalog=catalog, label_scheme="exact_partial_irrelevant", skip_bad=True,
        report=report,
    )
    assert scheme.name == "exact_partial_irrelevant" and len(pairs) == 2
    expected = {"empty query": 1, "unknown product": 1, "unknown label": 1, "empty label": 1}
    assert dict(report.counts) == expected
    assert report.summary() == (
        "skipped 4 of 6 rows (66.7%): empty query 1, unknown product 1, unknown label 1, empty label 1"
    )


# ---------------------------------------------------------------------------------------------------------
# label schemes


@pytest.mark.parametrize(
    ("labels", "name"),
    [
        (["Exact", "partial", "IRRELEVANT"], "exact_partial_irrelevant"),
        (["E", "S", "C", "I"], "esci"),
        (["exact", "Substitute", "complement"], "esci"),
        (["exact", "irrelevant"], "exact_partial_irrelevant"),  # fits both: exact_partial_irrelevant is preferred
        (["0", "1"], "binary"),
        ([True, False], "binary"),
        ([1, 0, 1.0], "binary"),
        (["1", "2", "3", "4"], "graded"),
        ([0, 3, 2], "graded"),
    ],
)
def test_auto_detection(labels: list, name: str) -> None:
    assert make_label_scheme("auto", labels).name == name


def test_scheme_gains_and_positives() -> None:
    esci = LABEL_SCHEMES["esci"]
    assert esci.gain("e") == 1.0 and esci.gain("Substitute") == 0.1 and esci.gain("C") == 0.01
    assert esci.is_positive("exact") and not esci.is_positive("S")
    epi = LABEL_SCHEMES["exact_partial_irrelevant"]
    assert [epi.gain(x) for x in ("EXACT", "partial", "irrelevant")] == [2.0, 1.0, 0.0]
    binary = LABEL_SCHEMES["binary"]
    assert binary.is_positive(True) and binary.is_positive(1.0) and not binary.is_positive("false")
    graded = make_label_scheme("auto", [1, 2, 4])
    assert graded.gains == {"1": 0.0, "2": 1.0, "3": 2.0, "4": 3.0}  # 3 is valid though unseen
    assert graded.positive == frozenset({"4"}) and graded.gain("3.0") == 2.0
    assert make_label_scheme("graded", [1, 2, 3, 4], threshold=3).positive == frozenset({"3", "4"})
    with pytest.raises(KeyError):
        esci.gain("X")
    with pytest.raises(DataError, match="unknown label 'X'"):
        esci.canonical("X")


def test_scheme_overrides() -> None:
    s = make_label_scheme("esci", positive=["E", "substitute"])
    assert s.positive == frozenset({"E", "S"})
    s = make_label_scheme("esci", gains={"S": 0.5})
    assert s.gain("s") == 0.5 and s.gain("E") == 1.0
    custom = make_label_scheme("stars", gains={"good": 2, "ok": 1, "bad": 0})
    assert custom.positive == frozenset({"good"}) and custom.gain("OK") == 1.0
    assert make_label_scheme("esci", positive="S").positive == frozenset({"S"})


@pytest.mark.parametrize(
    ("labels", "bad"),
    [(["E", "S", "maybe"], "maybe"), (["exact", "partial", "2.5"], "2.5"), (["E", "x1", "x2"], "x1")],
)
def test_ambiguous_labels_raise_naming_value(labels: list, bad: str) -> None:
    with pytest.raises(DataError) as ei:
        make_label_scheme("auto", labels)
    assert repr(bad) in str(ei.value)


def test_scheme_errors() -> None:
    with pytest.raises(DataError, match="needs the label values"):
        make_label_scheme("auto")
    with pytest.raises(DataError, match="unknown label scheme"):
        make_label_scheme("nonsense")
    with pytest.raises(DataError, match="unknown label 'Q'"):
        make_label_scheme("esci", ["E", "Q"])
    with pytest.raises(DataError, match="integers"):
        make_label_scheme("graded", ["1", "high"])
    with pytest.raises(DataError, match="no labels"):
        make_label_scheme("auto", ["", None])


def test_data_error_format() -> None:
    e = DataError("title is empty", file="c.csv", row=3, field="title", line=4)
    assert str(e) == "c.csv, row 3 (line 4), field 'title': title is empty"
    assert isinstance(e, ValueError)
    u = UnknownLabelError("unknown label 'x'", file="p.csv")
    assert str(u) == "p.csv: unknown label 'x'" and isinstance(u, KeyError)


def test_scheme_round_trips_through_dict() -> None:
    s = make_label_scheme("esci", positive=["E", "S"])
    back = type(s).from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and hash(back) == hash(s) and back.gain("substitute") == 0.1


def test_json_array_rows_have_no_line(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps([{"product_id": "a", "title": "x", "product_type": "t"},
                             {"product_id": "b", "title": "", "product_type": "t"}], indent=2))
    with pytest.raises(DataError) as ei:
        load_catalog(p)
    assert ei.value.row == 2 and ei.value.line is None


def test_old_scheme_name_epi_still_works(tmp_path: Path) -> None:
    path = pairs_file(tmp_path, [("a", "p2", "exact"), ("b", "p3", "partial")])
    with pytest.warns(FutureWarning, match="exact_partial_irrelevant"):
        pairs, scheme = load_pairs(path, label_scheme="epi")
    assert scheme.name == "exact_partial_irrelevant" and pairs["gain"].tolist() == [2.0, 1.0]
    with pytest.warns(FutureWarning):
        assert make_label_scheme("EPI") is LABEL_SCHEMES["exact_partial_irrelevant"]
