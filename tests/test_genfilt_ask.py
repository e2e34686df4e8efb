"""The generative judge's yes / no client against a real OpenAI-compatible server on loopback, and its answer
cache (persistent, resumable, keyed by the product text that was shown)."""

from __future__ import annotations

import numpy as np
import pytest
from test_genfilt_openai import FakeOpenAIServer, Misbehave, closed_port_url, describer

from querylife.genfilt import AnswerCache, JudgePrompt, YesNoClient, parse_yes_no
from querylife.genfilt.judges import GenerativeJudge

# The fake server answers from a table keyed by what follows "Title: " in the request.
PROMPT = JudgePrompt(version="t1", user="Title: {query} => {product}")


@pytest.mark.parametrize(
    ("text", "answer"),
    [("Yes", True), ("yes.", True), (" YES, it matches", True), ("No", False), ("no - wrong colour", False),
     ("Maybe", None), ("", None), ("The answer is yes", None), ("**No**", False)],
)
def test_parse_yes_no(text, answer):
    assert parse_yes_no(text) is answer


def test_judge_prompt_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        JudgePrompt(user="{query} {title}")
    assert "red dress" in JudgePrompt().render("red dress", "a dress", "dress")


def test_client_asks_concurrently_and_counts_answers():
    table = {"red dress => red cotton dress": "Yes.", "red dress => blue dress": "No", "red dress => ?": "Perhaps"}
    with FakeOpenAIServer(table=table, delay=0.1) as server:
        client = YesNoClient(describer(server.url, max_concurrency=3), PROMPT)
        answers = client.ask_many(
            [("red dress", "red cotton dress", "dress", None), ("red dress", "blue dress", "dress", None),
             ("red dress", "?", "dress", None)]
        )
        assert answers == [True, False, None]
        assert server.max_in_flight >= 2  # the questions of a batch go out together
        system = server.requests[0]["messages"][0]["content"]
        assert "one word" in system and server.requests[0]["max_tokens"] == PROMPT.max_tokens
    assert client.stats == {"asked": 3, "yes": 1, "no": 1, "not_yes_or_no": 1}
    assert client.name.startswith("yes-no:openai:")


def test_client_failures_are_undecided_not_errors():
    client = YesNoClient(describer(closed_port_url(), max_retries=0), PROMPT)
    assert client.ask("red dress", "red dress") is None
    assert client.stats["failed:unreachable"] == 1
    with FakeOpenAIServer(misbehave={"q => p": Misbehave(status=500)}) as server:
        client = YesNoClient(describer(server.url, max_retries=1), PROMPT)
        assert client.ask("q", "p") is None
        assert client.stats["failed:http_500"] == 1 and server.counts["q => p"] == 2  # retried once


def test_answer_cache_persists_and_rekeys_on_changed_text(tmp_path):
    texts = {"p1": "red dress", "p2": "blue dress"}
    path = tmp_path / "answers.jsonl"
    cache = AnswerCache(path, "judge-a", "v1", texts.__getitem__)
    cache.put_many([(("red dress", "p1"), True), (("red dress", "p2"), False)])
    again = AnswerCache(path, "judge-a", "v1", texts.__getitem__)
    assert again.get(("red dress", "p1")) is True and again[("red dress", "p2")] is False
    assert len(again) == 2 and again.get(("blue dress", "p1")) is None
    assert AnswerCache(path, "judge-b", "v1", texts.__getitem__).get(("red dress", "p1")) is None  # other model
    assert AnswerCache(path, "judge-a", "v2", texts.__getitem__).get(("red dress", "p1")) is None  # other prompt
    texts["p1"] = "red dress, silk"  # the product changed: its old answer no longer applies
    assert AnswerCache(path, "judge-a", "v1", texts.__getitem__).get(("red dress", "p1")) is None
    with pytest.raises(TypeError):
        del again[("red dress", "p1")]
    # a torn last line (a killed run) loses only that answer
    with open(path, "ab") as f:
        f.write(b'{"product_id": "p2", "conte')
    texts["p1"] = "red dress"
    assert AnswerCache(path, "judge-a", "v1", texts.__getitem__).get(("red dress", "p1")) is True


class _Prefilter:
    """Flags every off-positive pair; its scores rank column j by j."""

    name = "all"

    def __init__(self, texts):
        self.texts = texts
        self.last_scores = None

    def product_text(self, pid):
        return self.texts[pid]

    def mask(self, queries, product_ids, positive_ids):
        m = np.array([[p != pos for p in product_ids] for pos in positive_ids])
        self.last_scores = np.tile(np.arange(len(product_ids), dtype=float), (len(queries), 1))
        return m


def test_generative_judge_over_the_server_with_a_persistent_cache(tmp_path):
    texts = {"a": "red dress", "b": "red dress, other seller", "c": "blue dress"}
    table = {"red dress => red dress, other seller": "yes", "red dress => blue dress": "no"}
    with FakeOpenAIServer(table=table) as server:
        client = YesNoClient(describer(server.url), PROMPT)
        cache = AnswerCache(tmp_path / "answers.jsonl", client.name, PROMPT.version, texts.__getitem__)
        judge = GenerativeJudge(client, _Prefilter(texts), cache=cache, max_pairs_per_batch=8)
        mask = judge.mask(["red dress"], ["a", "b", "c"], ["a"])
        assert mask.tolist() == [[False, True, False]]
        assert judge.stats.asked == 2 and len(server.requests) == 2
    # a new run (new judge, same file, server gone) answers from the cache without asking
    dead = YesNoClient(describer(closed_port_url(), max_retries=0), PROMPT)
    cache = AnswerCache(tmp_path / "answers.jsonl", client.name, PROMPT.version, texts.__getitem__)
    judge = GenerativeJudge(dead, _Prefilter(texts), cache=cache, max_pairs_per_batch=8)
    assert judge.mask(["red dress"], ["a", "b", "c"], ["a"]).tolist() == [[False, True, False]]
    assert judge.stats.asked == 0 and judge.stats.cache_hits == 2
