"""A user's own catalogue, loaded the way a new user would: one loading path, their split, their column names,
their image URLs, their messy titles; and the demo storefront loads exactly as before."""

from __future__ import annotations

import http.server
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from querylife.config import ConfigError, load_config
from querylife.data.errors import BadRows, DataError
from querylife.data.formats import load_format, load_querylife
from querylife.data.image_urls import ImageFetch, ImageURLsRefused, cache_path
from querylife.data.prepare import prepare_from_config, to_dataset
from querylife.data.splits import split_by_query
from querylife.data.validation import check_dataset

TYPES = ("dress", "charger", "lamp")
COLOURS = ("red", "blue", "green", "black")


def user_store(
    directory: Path,
    *,
    image_column: str | None = "image",
    image_value=lambda pid: f"img/{pid}.png",
    split: bool = True,
    catalog_name: str = "catalog.csv",
    pairs_name: str = "pairs.csv",
    titles=None,
) -> tuple[Path, Path]:
    """A small catalogue in a stranger's layout: ``product_id, title, <image>, product_type, group_id, attr_*``
    (12 products with PNGs), and pairs with an intent per query (two paraphrases each) and, with ``split``, the
    user's own train / dev / test column fixed by intent."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(12):
        ptype, colour = TYPES[i % 3], COLOURS[i % 4]
        pid = f"p{i:02d}"
        Image.new("RGB", (10, 10), (20 * i, 100, 200)).save(directory / "img" / f"{pid}.png")
        row = {"product_id": pid, "title": f"{colour} {ptype} {i}", "product_type": ptype, "group_id": f"g{i // 2}",
               "attr_color": colour, "attr_size": "M" if i % 2 else ""}
        if image_column:
            row[image_column] = image_value(pid)
        rows.append(row)
    catalog = pd.DataFrame(rows)
    if titles is not None:
        catalog["title"] = titles(catalog["title"])
    catalog.to_csv(directory / catalog_name, index=False)
    pairs = []
    intents = [(t, c) for t in TYPES for c in COLOURS[:3]]  # 9 intents
    which = ["train"] * 5 + ["dev"] * 1 + ["test"] * 3
    for k, (ptype, colour) in enumerate(intents):
        for query in (f"{colour} {ptype}", f"{ptype} in {colour}"):
            for i in range(12):
                if TYPES[i % 3] == ptype:
                    label = "exact" if COLOURS[i % 4] == colour else "partial"
                elif i % 5 == k % 5:
                    label = "irrelevant"
                else:
                    continue
                row = {"query": query, "product_id": f"p{i:02d}", "label": label, "intent": f"{ptype}|{colour}"}
                if split:
                    row["split"] = which[k]
                pairs.append(row)
    pd.DataFrame(pairs).to_csv(directory / pairs_name, index=False)
    return directory / catalog_name, directory / pairs_name


def config(*sets: str):
    return load_config(None, ["model.tower.vision_model=small_cnn", "model.tower.small_cnn.image_size=16", *sets])


def split_rows(dataset) -> dict[str, list[tuple]]:
    return {k: list(map(tuple, v[["query", "product_id", "label"]].itertuples(index=False)))
            for k, v in dataset.splits.items()}


# ----------------------------------------------------------------------------------------------------------
# One loading path


def test_split_column_honoured_from_catalog_pairs_exactly_as_from_data_dir(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "store")
    by_files = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.split_by=intent"),
                                   progress=False)
    by_dir = prepare_from_config(config(f"data.path={tmp_path / 'store'}", "data.split_by=intent"), progress=False)
    assert split_rows(by_files) == split_rows(by_dir)
    for name in ("train", "dev", "test"):
        pd.testing.assert_frame_equal(by_files.splits[name], by_dir.splits[name])
    # Exactly the user's own split, not a random one.
    raw = pd.read_csv(prs)
    for name in ("train", "dev", "test"):
        assert set(by_files.splits[name]["intent"]) == set(raw.loc[raw["split"] == name, "intent"])
    # The same messages, saying which rule was used.
    assert [str(n) for n in by_files.notes] == [str(n) for n in by_dir.notes]
    split_lines = [n.text for n in by_files.notes if n.kind == "split"]
    assert split_lines == [f"split: the pairs' own `split` column (train {len(by_files.splits['train'])} / dev "
                           f"{len(by_files.splits['dev'])} / test {len(by_files.splits['test'])} pairs)"]
    assert by_files.has_image.all() and by_dir.has_image.all()


def test_without_split_column_both_ways_split_at_random_and_say_so(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "store", split=False)
    by_files = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.split_by=intent"),
                                   progress=False)
    by_dir = prepare_from_config(config(f"data.path={tmp_path / 'store'}", "data.split_by=intent"), progress=False)
    assert split_rows(by_files) == split_rows(by_dir)
    line = next(n.text for n in by_files.notes if n.kind == "split")
    assert line.startswith("split: random by 'intent', seed 0, 70/10/20 (train ")
    # With official_split off a split column is ignored, and the line says so.
    cat, prs = user_store(tmp_path / "own", split=True)
    off = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.split_by=intent",
                                     "data.official_split=false"), progress=False)
    line = next(n.text for n in off.notes if n.kind == "split")
    assert line.startswith("split: random by 'intent'") and "data.official_split is off" in line


def test_split_column_without_dev_carves_dev_from_train(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s")
    raw = pd.read_csv(prs)
    raw["split"] = raw["split"].replace({"dev": "train"})
    raw.to_csv(prs, index=False)
    data = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.split_by=intent"),
                               progress=False)
    assert set(data.splits["test"]["intent"]) == set(raw.loc[raw["split"] == "test", "intent"])
    assert len(data.splits["dev"]) and not set(data.splits["dev"]["intent"]) & set(data.splits["train"]["intent"])
    line = next(n.text for n in data.notes if n.kind == "split")
    assert "own `split` column for test; dev carved from its train rows at random by 'intent', seed 0" in line


def test_bad_split_value_names_file_row_and_field(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s")
    raw = pd.read_csv(prs)
    raw.loc[4, "split"] = "holdout"
    raw.to_csv(prs, index=False)
    with pytest.raises(DataError) as err:
        prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}"), progress=False)
    e = err.value
    assert e.file.endswith("pairs.csv") and e.row == 5 and e.field == "split" and "'holdout'" in str(e)
    assert "data.official_split=false" in str(e)
    # The check lists it with the other bad rows; aliases such as "validation" are read as dev.
    raw.loc[4, "split"] = "Validation"
    raw.to_csv(prs, index=False)
    assert check_dataset(cat, prs, check_images=False).ok()


def test_data_dir_and_files_refuse_both_at_once(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s")
    with pytest.raises(DataError, match="not both"):
        prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", f"data.path={tmp_path / 's'}"))


# ----------------------------------------------------------------------------------------------------------
# Column names


@pytest.mark.parametrize("column", ["image", "image_url", "Image URL", "img", "picture"])
def test_image_column_aliases_give_images(tmp_path: Path, column: str) -> None:
    cat, prs = user_store(tmp_path / "s", image_column=column)
    data = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}"), progress=False)
    assert data.has_image.all() and int(data.images.sum()) > 0
    assert f"catalog.csv: columns used: image_path <- {column!r} (alias)" in [n.text for n in data.notes]
    assert "text-only" not in data.notes.kinds()


def test_other_aliases_and_what_happens_to_the_other_columns(tmp_path: Path) -> None:
    d = tmp_path / "s"
    cat, prs = user_store(d, image_column="image")
    raw = pd.read_csv(cat).rename(columns={"product_id": "sku", "title": "Product Name", "product_type": "category"})
    raw["seller"] = "shop"
    raw.insert(0, "Unnamed: 0", range(len(raw)))
    raw.to_csv(cat, index=False)
    pairs = pd.read_csv(prs).rename(columns={"query": "search_term", "label": "relevance"})
    pairs.to_csv(prs, index=False)
    loaded = load_querylife(cat, prs)
    c = loaded.catalog.set_index("product_id")
    assert c.loc["p01", "title"] == "blue charger 1" and c.loc["p01", "product_type"] == "charger"
    # attr_* columns are gathered into attributes (empty cells left out) and stay as columns.
    assert json.loads(c.loc["p01", "attributes"]) == {"color": "blue", "size": "M"}
    assert json.loads(c.loc["p00", "attributes"]) == {"color": "red"}
    assert {"attr_color", "attr_size", "seller", "group_id"} <= set(c.columns) and "Unnamed: 0" not in c.columns
    texts = [n.text for n in loaded.notes]
    assert ("catalog.csv: columns used: product_id <- 'sku' (alias), title <- 'Product Name' (alias), "
            "product_type <- 'category' (alias), image_path <- 'image' (alias)") in texts
    assert "catalog.csv: columns gathered into attributes: attr_color, attr_size" in texts
    assert any(t.startswith("catalog.csv: columns kept but not used") and t.endswith(": seller") for t in texts)
    assert any(t.startswith("catalog.csv: columns ignored: 'Unnamed: 0'") for t in texts)
    assert "pairs.csv: columns used: query <- 'search_term' (alias), label <- 'relevance' (alias)" in texts
    assert any(t == "pairs.csv: columns kept but not used: intent" for t in texts)


def test_two_alias_columns_are_an_error_asking_for_column(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s", image_column="image")
    raw = pd.read_csv(cat)
    raw["image_url"] = raw["image"]
    raw.to_csv(cat, index=False)
    with pytest.raises(DataError) as err:
        load_querylife(cat, prs)
    msg = str(err.value)
    assert "catalog.csv" in msg and "'image'" in msg and "'image_url'" in msg and "--column image_path=" in msg
    # Naming one resolves it; the other is kept as an ordinary column.
    loaded = load_querylife(cat, prs, columns={"image_path": "image_url"})
    assert loaded.catalog["image_path"].notna().all() and "image" in loaded.catalog.columns


def test_mapping_from_config_and_its_errors(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s", image_column="shot")  # not an alias
    raw = pd.read_csv(cat).rename(columns={"product_id": "article"})
    raw.to_csv(cat, index=False)
    pd.read_csv(prs).rename(columns={"product_id": "article"}).to_csv(prs, index=False)
    cfg = config(f"data.catalog={cat}", f"data.pairs={prs}", "data.columns={image_path: shot, product_id: article}")
    data = prepare_from_config(cfg, progress=False)
    assert data.has_image.all() and data.catalog["product_id"].iloc[0] == "p00"
    assert ("catalog.csv: columns used: product_id <- 'article' (data.columns), image_path <- 'shot' "
            "(data.columns)") in [n.text for n in data.notes]
    # The same with one key at a time (what --column FIELD=COLUMN becomes).
    cfg2 = config(f"data.catalog={cat}", f"data.pairs={prs}", "data.columns.image_path=shot",
                  "data.columns.product_id=article")
    assert cfg2.data.columns == cfg.data.columns
    with pytest.raises(ConfigError, match="unknown field 'picture'"):
        config("data.columns={picture: shot}")
    with pytest.raises(ConfigError, match="title is required"):
        config("data.columns.title=")
    with pytest.raises(DataError, match="no such column"):
        load_querylife(cat, prs, columns={"title": "headline"})
    with pytest.raises(DataError, match="missing required column 'product_id'.*--column product_id=COLUMN"):
        load_querylife(cat, prs, columns={"product_id": "nope"})  # 'article' is no alias
    cat, prs = user_store(tmp_path / "plain")
    with pytest.raises(DataError, match="maps product_id to 'nope', but neither file has that column"):
        load_querylife(cat, prs, columns={"product_id": "nope"})
    with pytest.raises(DataError, match="data.columns applies to your own"):
        load_format(_crowdflower_csv(tmp_path), columns={"title": "x"})


def _crowdflower_csv(tmp_path: Path) -> Path:
    path = tmp_path / "cf.csv"
    pd.DataFrame({"id": [1], "query": ["q"], "product_title": ["t"], "product_description": [""],
                  "median_relevance": [4], "relevance_variance": [0]}).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------------------------------------
# Image warnings


def test_unused_image_like_column_and_text_only_warn(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s", image_column="pic")  # "pic" is not an alias
    data = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}"), progress=False)
    assert not data.has_image.any()
    warn = [n.text for n in data.notes.warnings]
    assert any("no column is used for image_path, but column 'pic' looks like image paths" in w
               and "--column image_path=pic" in w for w in warn), warn
    assert any("this run is text-only" in w for w in warn), warn
    # The check says the same, at the top, without calling it a problem.
    rep = check_dataset(cat, prs)
    md = rep.to_markdown()
    assert rep.ok() and md.startswith("# Data check: OK, 2 warnings\n\n## Warnings\n")
    assert "column 'pic' looks like image paths" in md and "text-only" in md
    # Saying there is no image column silences the first warning, not the second.
    quiet = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.columns.image_path="),
                                progress=False)
    assert quiet.notes.kinds().count("image-column") == 0 and "text-only" in quiet.notes.kinds()


def test_url_column_that_is_not_an_alias_warns_too(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s", image_column="media", image_value=lambda p: f"https://cdn.example/{p}.jpg")
    loaded = load_querylife(cat, prs)
    assert "image-column" in loaded.notes.kinds()


# ----------------------------------------------------------------------------------------------------------
# Titles


def test_control_characters_and_huge_titles_are_normalised_and_reported(tmp_path: Path) -> None:
    def messy(titles: pd.Series) -> pd.Series:
        t = titles.copy()
        t[1] = "blue\tcharger\x00 1\r\n"
        t[2] = "green   lamp \x1b[0m 2"
        t[3] = "black dress " + "very long description " * 60
        return t

    cat, prs = user_store(tmp_path / "s", titles=messy)
    data = prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}", "data.max_title_chars=100"),
                               progress=False)
    titles = data.catalog.set_index("product_id")["title"]
    assert titles["p01"] == "blue charger 1" and titles["p02"] == "green lamp [0m 2"
    assert len(titles["p03"]) <= 100 and titles["p03"].startswith("black dress very long")
    warn = [n.text for n in data.notes.warnings]
    assert ("catalog.csv: titles: 2 held control characters (tabs, newlines, ...), first at row 2: replaced by "
            "spaces") in warn
    assert any(w.startswith("catalog.csv: titles: 1 longer than 100 characters (data.max_title_chars; the longest "
                            "has 1331, first at row 4): cut to 100") for w in warn), warn
    rep = check_dataset(cat, prs, max_title_chars=100)
    assert rep.ok() and sum("titles:" in w for w in rep.warnings()) == 2
    assert "held control characters" in rep.to_markdown()


# ----------------------------------------------------------------------------------------------------------
# Image URLs


class _Server:
    """A static file server on 127.0.0.1 that counts requests."""

    def __init__(self, root: Path) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 - http.server's name
                hits.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(tmp_path: Path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    yield srv, root
    srv.close()


def test_image_urls_are_downloaded_once_into_the_cache(tmp_path: Path, server) -> None:
    srv, root = server
    for i in range(12):
        Image.new("RGB", (10, 10), (10 * i, 50, 50)).save(root / f"p{i:02d}.png")
    cat, prs = user_store(tmp_path / "s", image_column="image_url", image_value=lambda p: f"{srv.url}/{p}.png")
    cache = tmp_path / "cache"
    cfg = config(f"data.catalog={cat}", f"data.pairs={prs}", "data.download_images=true", f"data.image_cache={cache}")
    data = prepare_from_config(cfg, progress=False)
    assert data.has_image.all() and len(srv.hits) == 12
    url = f"{srv.url}/p03.png"
    assert data.catalog.set_index("product_id").loc["p03", "image_path"] == str(cache_path(url, cache))
    assert sorted(p.name for p in cache.iterdir()) == sorted(cache_path(f"{srv.url}/p{i:02d}.png", cache).name
                                                             for i in range(12))
    assert any("12 URLs in catalog.csv column 'image_url': 0 already in the cache" in n.text for n in data.notes)
    again = prepare_from_config(cfg, progress=False)
    assert len(srv.hits) == 12 and bool((again.images == data.images).all())  # nothing fetched twice


def test_failed_url_names_row_and_url_or_is_skipped_and_counted(tmp_path: Path, server) -> None:
    srv, root = server
    for i in range(12):
        if i != 5:
            Image.new("RGB", (10, 10)).save(root / f"p{i:02d}.png")
    (root / "p07.png").write_bytes(b"<html>not found</html>")  # served fine, but not an image
    cat, prs = user_store(tmp_path / "s", image_column="image_url", image_value=lambda p: f"{srv.url}/{p}.png")
    fetch = ImageFetch(download=True, cache_dir=str(tmp_path / "cache"), timeout_s=5)
    with pytest.raises(DataError) as err:
        load_querylife(cat, prs, images=fetch)
    e = err.value
    assert e.row == 6 and e.field == "image_url" and f"{srv.url}/p05.png" in str(e) and "404" in str(e)
    report = BadRows()
    loaded = load_querylife(cat, prs, images=fetch, skip_bad=True, report=report)
    assert report.counts["image download failed"] == 2
    paths = loaded.catalog.set_index("product_id")["image_path"]
    assert paths["p05"] is None and paths["p07"] is None and paths.notna().sum() == 10
    assert "image-urls-failed" in loaded.notes.kinds()
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())  # no temporary leftovers


def test_urls_without_download_are_refused_with_instructions(tmp_path: Path) -> None:
    cat, prs = user_store(tmp_path / "s", image_column="image_url", image_value=lambda p: f"https://cdn.test/{p}.jpg")
    with pytest.raises(ImageURLsRefused) as err:
        prepare_from_config(config(f"data.catalog={cat}", f"data.pairs={prs}"), progress=False)
    e = err.value
    assert e.n_urls == 12 and e.row == 1 and e.field == "image_url" and e.file.endswith("catalog.csv")
    assert "data.download_images=true" in str(e) and "download them yourself" in str(e)
    rep = check_dataset(cat, prs)
    assert not rep.ok() and rep.counts["images: image URL not downloaded"] == 12
    assert "text-only" not in [n["kind"] for n in rep.notes]


def test_relative_absolute_and_file_url_paths(tmp_path: Path) -> None:
    d = tmp_path / "s"
    cat, prs = user_store(d, image_column="image_path")
    raw = pd.read_csv(cat)
    raw.loc[1, "image_path"] = str(d / "img" / "p01.png")  # absolute
    raw.loc[2, "image_path"] = (d / "img" / "p02.png").as_uri()  # file://
    raw.to_csv(cat, index=False)
    loaded = load_querylife(cat, prs)
    paths = loaded.catalog["image_path"].tolist()
    assert paths[0] == str(d / "img" / "p00.png")  # relative to the catalogue's folder
    assert paths[1] == str(d / "img" / "p01.png") and paths[2] == str(d / "img" / "p02.png")
    assert to_dataset(loaded, image_size=8).has_image.all()


# ----------------------------------------------------------------------------------------------------------
# Label scheme name


def test_epi_is_still_accepted_as_the_old_name() -> None:
    with pytest.warns(FutureWarning, match="exact_partial_irrelevant"):
        cfg = config("data.label_scheme=epi")
    assert cfg.data.label_scheme == "exact_partial_irrelevant"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config("data.label_scheme=exact_partial_irrelevant").data.label_scheme == "exact_partial_irrelevant"


# ----------------------------------------------------------------------------------------------------------
# The demo storefront loads as it always did


def test_demo_storefront_loads_as_before(tiny_store) -> None:
    """No split column, image_path given, split by intent: a random split by intent, every image loaded."""
    cfg = load_config(None, [f"data.{k.split('.', 1)[1]}={v}" for k, v in tiny_store.config_overrides().items()]
                      + ["model.tower.vision_model=small_cnn", "model.tower.small_cnn.image_size=32"])
    data = prepare_from_config(cfg, progress=False)
    assert data.has_image.all()
    expected = split_by_query(data.pairs, fractions=(0.7, 0.1, 0.2), seed=0, group_by="intent")
    for name in ("train", "dev", "test"):
        pd.testing.assert_frame_equal(data.splits[name], expected[name])
    raw = pd.read_parquet(tiny_store.catalog_path)
    assert data.catalog["title"].tolist() == raw["title"].tolist()  # demo titles are already clean
    assert not data.notes.warnings
    assert data.label_scheme.name == "exact_partial_irrelevant"
    assert np.array_equal(data.catalog["product_id"].to_numpy(), raw["product_id"].to_numpy())
