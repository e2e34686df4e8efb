"""DescriptionCache: keys, persistence, torn lines from kills, thread-safe appends; content_hash; PromptTemplate."""

from __future__ import annotations

import json
import threading

import pytest
from pydantic import ValidationError

from querylife.genfilt import CacheError, DescriptionCache, ProductInput, PromptTemplate, content_hash

D, V = "openai:http://127.0.0.1:8000/v1:m", "v1"


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_round_trip_and_persistence(tmp_path):
    path = tmp_path / "sub" / "descriptions.jsonl"
    cache = DescriptionCache(path)
    assert len(cache) == 0 and not path.exists()
    a, b = ProductInput("a", "Red dress", "dress"), ProductInput("b", "USB cable", "cable")
    cache.put_many([(a, "red dress"), (b, "usb-c cable, 2 m")], D, V)
    assert cache.get(a, D, V) == "red dress"
    again = DescriptionCache(path)
    assert len(again) == 2 and again.get(b, D, V) == "usb-c cable, 2 m"
    record = lines(path)[0]
    assert set(record) == {"product_id", "content_hash", "describer", "prompt_version", "text", "created_at"}
    assert record["content_hash"] == content_hash(a) and record["created_at"].endswith("+00:00")
    assert [r["product_id"] for r in again.items()] == ["a", "b"]
    cache.put_many([], D, V)  # nothing to do, nothing written
    assert len(lines(path)) == 2


def test_key_includes_content_describer_and_prompt_version(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG first")
    item = ProductInput("a", "Red dress", "dress", str(image))
    cache = DescriptionCache(tmp_path / "c.jsonl")
    cache.put_many([(item, "red dress")], D, V)
    assert cache.get(item, D, V) == "red dress"
    assert cache.get(ProductInput("a", "Red dress v2", "dress", str(image)), D, V) is None  # title changed
    assert cache.get(ProductInput("a", "Red dress", "skirt", str(image)), D, V) is None  # type changed
    assert cache.get(ProductInput("b", "Red dress", "dress", str(image)), D, V) is None  # another product
    assert cache.get(item, "openai:http://other/v1:m", V) is None
    assert cache.get(item, D, "v2") is None
    image.write_bytes(b"\x89PNG second")  # same path, new photo: described again
    assert cache.get(item, D, V) is None


def test_content_hash():
    a = ProductInput("a", "Red dress", "dress")
    assert content_hash(a) == content_hash(ProductInput("other-id", "Red dress", "dress"))  # id is its own key
    assert len(content_hash(a)) == 16 and int(content_hash(a), 16) >= 0
    # Length-prefixed parts: moving text between fields changes the hash.
    assert content_hash(ProductInput("a", "ab", "c")) != content_hash(ProductInput("a", "a", "bc"))
    assert content_hash(ProductInput("a", "t", "x", "https://img/1.jpg")) != content_hash(ProductInput("a", "t", "x"))


def test_missing_image_hash_changes_when_the_file_appears(tmp_path):
    path = tmp_path / "later.jpg"
    item = ProductInput("a", "Red dress", "dress", str(path))
    missing = content_hash(item)
    assert missing == content_hash(item) and missing != content_hash(ProductInput("a", "Red dress", "dress"))
    assert missing != content_hash(ProductInput("a", "Red dress", "dress", str(tmp_path / "other.jpg")))
    path.write_bytes(b"\xff\xd8\xff photo")
    assert content_hash(item) != missing


def test_duplicates_last_wins_and_latest(tmp_path):
    cache = DescriptionCache(tmp_path / "c.jsonl")
    old, new = ProductInput("a", "Red dress", "dress"), ProductInput("a", "Red midi dress", "dress")
    b = ProductInput("b", "Cable", "cable")
    cache.put_many([(old, "first"), (b, "cable")], D, V)
    cache.put_many([(old, "second")], D, V)
    cache.put_many([(new, "red midi dress")], D, V)
    cache.put_many([(b, "other prompt")], D, "v2")
    reloaded = DescriptionCache(tmp_path / "c.jsonl")
    for c in (cache, reloaded):
        assert len(c) == 4  # (a, old), (b, v1), (a, new), (b, v2)
        assert c.get(old, D, V) == "second"
        assert c.latest(D, V) == {"a": "red midi dress", "b": "cable"}  # the newest description of each product
        assert c.latest(D, "v2") == {"b": "other prompt"}
        assert c.latest(D, V, items=[old]) == {"a": "second"}  # matched to the given content
        assert c.latest(D, V, items=[ProductInput("z", "new", "x")]) == {}
    assert reloaded.lines_read == 5


def test_torn_last_line_is_ignored_then_cut(tmp_path):
    path = tmp_path / "c.jsonl"
    a, b = ProductInput("a", "A", "x"), ProductInput("b", "B", "x")
    DescriptionCache(path).put_many([(a, "desc a")], D, V)
    with open(path, "ab") as f:
        f.write(b'{"product_id": "b", "content_hash": "12')  # what a kill mid-write leaves
    cache = DescriptionCache(path)
    assert cache.torn_tail and len(cache) == 1 and cache.get(a, D, V) == "desc a"
    cache.put_many([(b, "desc b")], D, V)
    assert [r["product_id"] for r in lines(path)] == ["a", "b"]  # every line is valid JSON again
    assert not cache.torn_tail and len(DescriptionCache(path)) == 2


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    a, b = ProductInput("a", "A", "x"), ProductInput("b", "B", "x")
    DescriptionCache(path).put_many([(a, "desc a")], D, V)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    cache = DescriptionCache(path)
    assert not cache.torn_tail and cache.get(a, D, V) == "desc a"
    cache.put_many([(b, "desc b")], D, V)
    assert [r["product_id"] for r in lines(path)] == ["a", "b"]


def test_tail_finished_by_another_writer_is_not_cut(tmp_path):
    """Whether the tail is torn is decided at write time, under the file lock, not from what was loaded."""
    path = tmp_path / "c.jsonl"
    a, b, c = (ProductInput(p, p.upper(), "x") for p in "abc")
    DescriptionCache(path).put_many([(a, "desc a")], D, V)
    line_b = (
        json.dumps(
            {
                "product_id": "b",
                "content_hash": content_hash(b),
                "describer": D,
                "prompt_version": V,
                "text": "desc b",
                "created_at": "2024-01-01T00:00:00+00:00",
            }
        )
        + "\n"
    )
    with open(path, "a") as f:
        f.write(line_b[:20])  # another process is half-way through its line...
    first = DescriptionCache(path)
    assert first.torn_tail
    with open(path, "a") as f:
        f.write(line_b[20:])  # ...and finishes it
    first.put_many([(c, "desc c")], D, V)
    assert [r["product_id"] for r in lines(path)] == ["a", "b", "c"]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    DescriptionCache(path).put_many([(ProductInput("a", "A", "x"), "desc a")], D, V)
    with open(path, "a") as f:
        f.write("not json\n")
        f.write(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(CacheError, match=r"c\.jsonl, line 2"):
        DescriptionCache(path)
    path.write_text('{"product_id": "a"}\n')  # valid JSON, missing fields
    with pytest.raises(CacheError, match="line 1"):
        DescriptionCache(path)


def test_put_many_fsyncs(tmp_path, monkeypatch):
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    DescriptionCache(tmp_path / "c.jsonl").put_many([(ProductInput("a", "A", "x"), "a")], D, V)
    assert len(calls) == 1


def test_concurrent_put_many_from_threads(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = DescriptionCache(path)
    n_threads, per_thread = 8, 40

    def work(t: int) -> None:
        for i in range(0, per_thread, 4):
            recs = [
                (ProductInput(f"t{t}-{j}", f"title {t} {j}", "x"), f"text {t} {j} " + "é" * 50) for j in range(i, i + 4)
            ]
            cache.put_many(recs, D, V)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = lines(path)  # every line parses
    assert len(records) == n_threads * per_thread
    assert len({r["product_id"] for r in records}) == n_threads * per_thread
    assert len(cache) == len(DescriptionCache(path)) == n_threads * per_thread


def test_unreadable_cache_path(tmp_path):
    with pytest.raises(CacheError, match="cannot read"):
        DescriptionCache(tmp_path)  # a directory


def test_put_many_rejects_non_text(tmp_path):
    with pytest.raises(TypeError, match="'a'"):
        DescriptionCache(tmp_path / "c.jsonl").put_many([(ProductInput("a", "A", "x"), None)], D, V)  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------------------------
# PromptTemplate


def test_prompt_template_renders_and_validates():
    prompt = PromptTemplate()
    text = prompt.render(ProductInput("p1", "Red {floral} dress", "dress"))
    assert text.startswith("Product type: dress\nTitle: Red {floral} dress\n")  # braces in data are safe
    custom = PromptTemplate(version="v2", user="{product_id} {{literal}} {title:.3}")
    assert custom.render(ProductInput("p1", "Red dress", "dress")) == "p1 {literal} Red"
    for bad in ("{brand}", "{title", "title}", "{0}", "{}", "{title:d}", "{title.upper}"):
        with pytest.raises(ValidationError):
            PromptTemplate(user=bad)
    with pytest.raises(ValidationError):
        PromptTemplate(unknown=1)  # extra="forbid": a typo in a config fails loudly
    with pytest.raises(ValidationError):
        PromptTemplate(max_tokens=0)
    with pytest.raises(ValidationError):
        PromptTemplate(version="")
    assert PromptTemplate.model_validate(prompt.model_dump()) == prompt
