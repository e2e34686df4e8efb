"""describe_catalog: counts, resuming, failures retried, changed products redescribed, a real kill mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from querylife.genfilt import (
    DescribeError,
    DescribeSummary,
    DescriptionCache,
    OpenAIDescriber,
    ProductInput,
    PromptTemplate,
    describe_catalog,
    products_from_catalog,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_genfilt_openai import FakeOpenAIServer, Misbehave, closed_port_url  # noqa: E402

PROMPT = PromptTemplate()


class TableDescriber:
    """In-process describer: ``fail`` maps a title to the reason it fails with for its first ``fail_times`` calls."""

    def __init__(self, fail: dict[str, str] | None = None, fail_times: int = 1_000_000, name: str = "fake:v0"):
        self.name = name
        self.fail = fail or {}
        self.fail_times = fail_times
        self.calls: list[str] = []  # titles asked for, in order
        self.batches: list[int] = []

    def describe_batch(self, items: Sequence[ProductInput], prompt: PromptTemplate) -> list[str | DescribeError]:
        self.batches.append(len(items))
        out: list[str | DescribeError] = []
        for item in items:
            self.calls.append(item.title)
            if item.title in self.fail and self.calls.count(item.title) <= self.fail_times:
                out.append(DescribeError(self.fail[item.title], f"scripted {self.fail[item.title]}"))
            else:
                out.append(f"desc of {item.title}")
        return out


def products(n: int, prefix: str = "t") -> list[ProductInput]:
    return [ProductInput(f"p{i:03d}", f"{prefix}{i}", "dress") for i in range(n)]


def test_summary_text_matches_the_documented_format():
    s = DescribeSummary(
        total=300, described=120, cached=170, failed={"garbage": 3, "timeout": 7}, examples=[], seconds=1.0
    )
    assert s.to_text() == "described 120 (40.0%), cached 170 (56.7%), failed 10 (3.3%): timeout 7, garbage 3"
    assert DescribeSummary(0, 0, 0, {}, [], 0.0).to_text() == "described 0 (0.0%), cached 0 (0.0%), failed 0 (0.0%)"


def test_counts_then_everything_cached(tmp_path):
    items = products(10)
    cache = DescriptionCache(tmp_path / "c.jsonl")
    d = TableDescriber(fail={"t3": "timeout", "t7": "garbage"})
    cache.put_many([(items[0], "old a"), (items[1], "old b"), (items[2], "old c")], d.name, PROMPT.version)

    s = describe_catalog(items, d, PROMPT, cache, batch_size=3, progress=False)
    assert (s.total, s.described, s.cached, s.failed) == (10, 5, 3, {"timeout": 1, "garbage": 1})
    assert d.calls == [f"t{i}" for i in range(3, 10)] and d.batches == [3, 3, 1]
    assert s.examples == [("p003", "timeout: scripted timeout"), ("p007", "garbage: scripted garbage")]
    assert s.to_text() == "described 5 (50.0%), cached 3 (30.0%), failed 2 (20.0%): garbage 1, timeout 1"
    assert s.seconds >= 0 and s.pending == 0 and s.stopped is None
    assert cache.latest(d.name, PROMPT.version)["p004"] == "desc of t4"
    assert "p003" not in cache.latest(d.name, PROMPT.version)  # failures are not cached

    # The next run asks only for the failures; once they succeed, a third run asks for nothing.
    d2 = TableDescriber()
    s2 = describe_catalog(items, d2, PROMPT, DescriptionCache(tmp_path / "c.jsonl"), progress=False)
    assert d2.calls == ["t3", "t7"] and (s2.described, s2.cached, s2.failed) == (2, 8, {})
    d3 = TableDescriber()
    s3 = describe_catalog(items, d3, PROMPT, DescriptionCache(tmp_path / "c.jsonl"), progress=False)
    assert d3.calls == [] and s3.cached == 10 and s3.to_text().startswith("described 0 (0.0%), cached 10 (100.0%)")


def test_changed_product_or_new_prompt_is_redescribed(tmp_path):
    items = products(4)
    cache = DescriptionCache(tmp_path / "c.jsonl")
    describe_catalog(items, TableDescriber(), PROMPT, cache, progress=False)
    changed = [items[0], ProductInput("p001", "t1 new title", "dress"), *items[2:]]
    d = TableDescriber()
    s = describe_catalog(changed, d, PROMPT, cache, progress=False)
    assert d.calls == ["t1 new title"] and (s.described, s.cached) == (1, 3)
    assert cache.latest(d.name, PROMPT.version)["p001"] == "desc of t1 new title"
    assert cache.latest(d.name, PROMPT.version, items=items)["p001"] == "desc of t1"  # the old content's text

    d = TableDescriber()
    describe_catalog(changed, d, PromptTemplate(version="v2"), cache, progress=False)
    assert len(d.calls) == 4
    d = TableDescriber(name="fake:other")
    describe_catalog(changed, d, PROMPT, cache, progress=False)
    assert len(d.calls) == 4


def test_limit_duplicates_and_bad_describer(tmp_path):
    cache = DescriptionCache(tmp_path / "c.jsonl")
    items = products(10)
    d = TableDescriber()
    s = describe_catalog(items, d, PROMPT, cache, limit=4, batch_size=3, progress=False)
    assert (s.described, s.pending, len(d.calls)) == (4, 6, 4)
    assert s.to_text().endswith("; pending 6 (60.0%)")
    s = describe_catalog(items, TableDescriber(), PROMPT, cache, limit=4, progress=False)
    assert (s.described, s.cached, s.pending) == (4, 4, 2)  # the next chunk

    twice = [items[0], items[0]]
    d = TableDescriber()
    s = describe_catalog(twice, d, PROMPT, DescriptionCache(tmp_path / "d.jsonl"), progress=False)
    assert d.calls == ["t0"] and s.described == 2 and s.total == 2

    class Short(TableDescriber):
        def describe_batch(self, items, prompt):
            return super().describe_batch(items, prompt)[:-1]

    with pytest.raises(ValueError, match="returned 1 results for 2"):
        describe_catalog(products(2), Short(), PROMPT, DescriptionCache(tmp_path / "e.jsonl"), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        describe_catalog(items, d, PROMPT, cache, batch_size=0, progress=False)


def test_empty_or_odd_results_count_as_failures(tmp_path):
    class Odd(TableDescriber):
        def describe_batch(self, items, prompt):
            return ["  ", None, "ok"]

    s = describe_catalog(products(3), Odd(), PROMPT, DescriptionCache(tmp_path / "c.jsonl"), progress=False)
    assert s.failed == {"empty": 1, "garbage": 1} and s.described == 1


def test_stops_when_a_whole_batch_fails_fatally(tmp_path):
    items = products(20)
    d = TableDescriber(fail={f"t{i}": "unreachable" for i in range(20)})
    s = describe_catalog(items, d, PROMPT, DescriptionCache(tmp_path / "c.jsonl"), batch_size=5, progress=False)
    assert len(d.calls) == 5 and s.failed == {"unreachable": 5} and s.pending == 15
    assert s.stopped and "unreachable" in s.stopped and "stopped early" in s.to_text()

    # A batch with some successes, or non-fatal failures, goes on.
    d = TableDescriber(fail={f"t{i}": "timeout" for i in range(20)})
    s = describe_catalog(items, d, PROMPT, DescriptionCache(tmp_path / "d.jsonl"), batch_size=5, progress=False)
    assert len(d.calls) == 20 and s.stopped is None


def test_progress_bar(tmp_path, capsys):
    describe_catalog(products(5), TableDescriber(), PROMPT, DescriptionCache(tmp_path / "c.jsonl"), progress=True)
    err = capsys.readouterr().err
    assert "describing" in err and "5/5" in err


def test_products_from_catalog():
    catalog = pd.DataFrame(
        {
            "product_id": ["a", "b", "c"],
            "title": ["Red dress", "Cable", "Bag"],
            "product_type": ["dress", "cable", "bag"],
            "image_path": ["/img/a.png", None, float("nan")],
            "attributes": [None, None, None],
        }
    )
    assert products_from_catalog(catalog) == [
        ProductInput("a", "Red dress", "dress", "/img/a.png"),
        ProductInput("b", "Cable", "cable", None),
        ProductInput("c", "Bag", "bag", None),
    ]
    assert products_from_catalog(catalog.drop(columns="image_path"))[0].image_path is None
    with pytest.raises(ValueError, match="lacks column.*title"):
        products_from_catalog(catalog.drop(columns="title"))


# ----------------------------------------------------------------------------------------------------------
# against the loopback server


def test_openai_describer_end_to_end_with_failures(tmp_path):
    titles = [f"t{i}" for i in range(12)]
    misbehave = {"t2": Misbehave(sleep=5), "t5": Misbehave(garbage="not_json"), "t8": Misbehave(status=500, times=1)}
    with FakeOpenAIServer(misbehave=misbehave) as srv:
        d = OpenAIDescriber(srv.url, "m", api_key="", timeout_s=0.3, max_retries=1, backoff_s=0.01)
        cache = DescriptionCache(tmp_path / "c.jsonl")
        items = [ProductInput(f"p{i}", t, "dress") for i, t in enumerate(titles)]
        s = describe_catalog(items, d, PROMPT, cache, batch_size=4, progress=False)
        assert (s.described, s.cached, s.failed) == (10, 0, {"timeout": 1, "garbage": 1})
        assert cache.latest(d.name, PROMPT.version)["p8"] == "desc of t8"  # the 500 was retried
        srv.misbehave.clear()
        srv.counts.clear()
        s = describe_catalog(items, d, PROMPT, DescriptionCache(tmp_path / "c.jsonl"), progress=False)
        assert (s.described, s.cached, s.failed) == (2, 10, {})
        assert set(srv.counts) == {"t2", "t5"}


def test_unreachable_server_stops_the_run(tmp_path):
    d = OpenAIDescriber(closed_port_url(), "m", api_key="", max_retries=0)
    s = describe_catalog(products(40), d, PROMPT, DescriptionCache(tmp_path / "c.jsonl"), batch_size=8, progress=False)
    assert s.failed == {"unreachable": 8} and s.pending == 32 and "cannot connect" in s.stopped


_WORKER = textwrap.dedent(
    """
    import sys
    from querylife.genfilt import DescriptionCache, OpenAIDescriber, ProductInput, PromptTemplate, describe_catalog

    url, cache_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    items = [ProductInput(f"p{i:03d}", f"t{i}", "dress") for i in range(n)]
    d = OpenAIDescriber(url, "m", api_key="", max_concurrency=2, timeout_s=10, max_retries=0)
    summary = describe_catalog(items, d, PromptTemplate(), DescriptionCache(cache_path), batch_size=4, progress=False)
    print(summary.to_text())
    """
)


def test_resume_after_a_real_kill(tmp_path):
    n = 60
    cache_path = tmp_path / "descriptions.jsonl"
    with FakeOpenAIServer(delay=0.05) as srv:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, srv.url, str(cache_path), str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                if cache_path.exists() and cache_path.read_bytes().count(b"\n") >= 12:
                    break
                time.sleep(0.005)
            assert proc.poll() is None, f"worker ended before it could be killed: {proc.communicate()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        # Let the server finish (and count) the killed worker's requests still in flight before counting anew.
        settle = time.monotonic() + 5
        while srv.in_flight and time.monotonic() < settle:
            time.sleep(0.01)
        time.sleep(0.1)
        # What a kill in the middle of a write would leave, on top of the real kill.
        with open(cache_path, "ab") as f:
            f.write(b'{"product_id": "p0')
        done_before = {r["product_id"] for r in DescriptionCache(cache_path).items()}
        assert 12 <= len(done_before) < n
        requests_before = sum(srv.counts.values())
        assert requests_before < n

        srv.counts.clear()
        cache = DescriptionCache(cache_path)
        d = OpenAIDescriber(srv.url, "m", api_key="", max_concurrency=4)
        s = describe_catalog(
            [ProductInput(f"p{i:03d}", f"t{i}", "dress") for i in range(n)], d, PROMPT, cache, progress=False
        )
        assert (s.cached, s.described, s.failed) == (len(done_before), n - len(done_before), {})
        # Nothing already cached was asked for again; everything else exactly once.
        asked = set(srv.counts)
        assert not asked & {f"t{int(p[1:])}" for p in done_before}
        assert all(c == 1 for c in srv.counts.values()) and len(asked) == n - len(done_before)

    records = [r for r in DescriptionCache(cache_path).items()]
    ids = [r["product_id"] for r in records]
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]  # every product exactly once, none lost
    assert cache_path.read_bytes().count(b"\n") == n  # no duplicated work on disk, torn line cut off
    assert all(r["text"] == f"desc of t{int(r['product_id'][1:])}" for r in records)


def test_describe_reads_the_catalogue_like_training(tmp_path):
    """`genfilt describe` uses data.columns and the aliases, and the normalised titles, as training does."""
    from querylife.config import load_config
    from querylife.genfilt.describe import describe_from_config

    pd.DataFrame(
        {"sku": ["a", "b"], "headline": ["red\tdress\x07 ", "usb  cable"], "category": ["dress", "cable"], "x": [1, 2]}
    ).to_csv(tmp_path / "items.csv", index=False)
    with FakeOpenAIServer() as srv:
        cfg = load_config(
            None,
            [f"genfilt.base_url={srv.url}", "genfilt.model=m", f"genfilt.cache={tmp_path / 'c.jsonl'}",
             f"data.catalog={tmp_path / 'items.csv'}", "data.columns.title=headline"],
        )
        summary = describe_from_config(cfg, progress=False, log=lambda s: None)
        assert summary.described == 2
        assert set(srv.counts) == {"red dress", "usb cable"}  # aliases found sku / category; titles normalised
