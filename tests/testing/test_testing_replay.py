"""ReplayLLM: record through the real client once, replay offline."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from tracegrad.llm import LLMError, OpenAIEngine
from tracegrad.llm.base import make_request
from tracegrad.testing import FakeOpenAIServer, MockLLM, ReplayLLM


class Answer(BaseModel):
    answer: int


@pytest.fixture
def cassette(tmp_path):
    return tmp_path / "cassettes" / "calls.jsonl"


def test_record_then_replay_offline(cassette):
    with FakeOpenAIServer(["Paris", '{"answer": 4}', "second Paris"]) as s:
        rec = ReplayLLM(OpenAIEngine("gpt-4o-mini", base_url=s.url), cassette, mode="record")
        a = rec.complete(make_request("capital of France?", temperature=0))
        b = rec.complete(make_request("2+2?", response_format=Answer))
        c = rec.complete(make_request("capital of France?", temperature=0))
        assert s.request_count == 3
    lines = [json.loads(x) for x in cassette.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0]["request"]["summary"] == "capital of France?"
    assert len(lines[0]["key"]) == 64
    # the server is gone: everything comes from the cassette
    play = ReplayLLM(cassette=cassette, mode="replay")
    a2 = play.complete(make_request("capital of France?", temperature=0))
    b2 = play.complete(make_request("2+2?", response_format=Answer))
    c2 = play.complete(make_request("capital of France?", temperature=0))
    assert (a2.text, c2.text) == (a.text, c.text) == ("Paris", "second Paris")
    assert b2.parsed == Answer(answer=4) == b.parsed
    assert a2.usage == a.usage
    # recorded twice, replayed in order, the last repeating
    assert play.complete(make_request("capital of France?", temperature=0)).text == "second Paris"


def test_unrecorded_request_fails_clearly(cassette):
    ReplayLLM(MockLLM(["x"]), cassette, mode="record").chat("known")
    play = ReplayLLM(cassette=cassette, mode="replay")
    question = "a brand new question " + "z" * 300
    with pytest.raises(LLMError) as ei:
        play.chat(question)
    msg = str(ei.value)
    assert "not recorded" in msg and str(cassette) in msg
    assert question[:200] in msg and question[:201] not in msg
    with pytest.raises(LLMError):
        play.chat("known", temperature=1)  # different parameters, different request


def test_auto_records_only_what_is_missing(cassette):
    inner = MockLLM(["one", "two"])
    auto = ReplayLLM(inner, cassette, mode="auto")
    assert auto.chat("a").text == "one"
    assert asyncio.run(auto.achat("a")).text == "one"
    assert inner.calls == 1
    again = ReplayLLM(inner, cassette, mode="auto")
    assert again.chat("a").text == "one"
    assert again.chat("b").text == "two"
    assert inner.calls == 2
    assert len(cassette.read_text().splitlines()) == 2


def test_record_mode_starts_a_fresh_cassette(cassette):
    ReplayLLM(MockLLM(["old"]), cassette, mode="record").chat("q")
    ReplayLLM(MockLLM(["new"]), cassette, mode="record").chat("q")
    assert ReplayLLM(cassette=cassette, mode="replay").chat("q").text == "new"
    assert len(cassette.read_text().splitlines()) == 1


def test_bad_cassettes_and_arguments(cassette, tmp_path):
    with pytest.raises(LLMError, match="does not exist"):
        ReplayLLM(cassette=tmp_path / "missing.jsonl", mode="replay")
    cassette.parent.mkdir(parents=True)
    cassette.write_text('{"key": "abc", "completion": {"text": "ok"}}\nnot json\n')
    with pytest.raises(LLMError, match="line 2"):
        ReplayLLM(cassette=cassette, mode="replay")
    with pytest.raises(LLMError, match="inner engine"):
        ReplayLLM(cassette=cassette, mode="record")
    with pytest.raises(LLMError, match="mode"):
        ReplayLLM(MockLLM(), cassette, mode="sometimes")  # type: ignore[arg-type]


def test_a_cassette_never_holds_the_key(cassette):
    """Cassettes are committed: a reply echoing the Authorization header is kept scrubbed."""
    key = "sk-cassette-ECHO-0123456789"
    with FakeOpenAIServer(["hi"], echo_authorization=True) as s:
        rec = ReplayLLM(OpenAIEngine("m", base_url=s.url, api_key=key), cassette, mode="record")
        assert rec.complete(make_request("q")).text == f"hi\nBearer {key}"  # live: as sent
    assert key not in cassette.read_text() and "ECHO-0123456789" not in cassette.read_text()
    replayed = ReplayLLM(cassette=cassette, mode="replay").complete(make_request("q"))
    assert replayed.text == "hi\nBearer [REDACTED]"


def test_namespaces_keep_engines_sharing_a_cassette_apart(cassette):
    ReplayLLM(MockLLM(["small"], model="s"), cassette, "record", namespace="s").chat("q")
    ReplayLLM(MockLLM(["big"], model="b"), cassette, "record", namespace="b", append=True).chat("q")
    assert len(cassette.read_text().splitlines()) == 2  # append: the first engine's line kept
    small = ReplayLLM(cassette=cassette, mode="replay", namespace="s")
    big = ReplayLLM(cassette=cassette, mode="replay", namespace="b")
    assert (small.chat("q").text, big.chat("q").text) == ("small", "big")
    assert (small.model, big.model) == ("s", "b")  # as recorded: pricing replays too
    with pytest.raises(LLMError, match="not recorded"):
        ReplayLLM(cassette=cassette, mode="replay").chat("q")  # no namespace: none recorded


def test_misses_are_kept_even_when_the_caller_catches_them(cassette):
    from tracegrad.testing import CassetteMiss

    ReplayLLM(MockLLM(["x"]), cassette, mode="record").chat("known")
    play = ReplayLLM(cassette=cassette, mode="replay", hint="do the thing")
    with pytest.raises(CassetteMiss, match="do the thing") as ei:
        play.chat("unknown", purpose="judge")
    assert ei.value.path == cassette and ei.value.request.purpose == "judge"
    assert play.misses == [ei.value]


def test_cassette_path_sits_beside_the_test(tmp_path):
    from tracegrad.testing.cassette import cassette_path

    assert cassette_path(tmp_path / "tests" / "test_qa.py", "test_a[x-1/2]") == (
        tmp_path / "tests" / "cassettes" / "test_qa" / "test_a-x-1-2.jsonl"
    )
