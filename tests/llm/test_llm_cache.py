"""Cache: hits send nothing, misses are stored, the file survives threads and processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from pydantic import BaseModel

from tracegrad.llm import LLM, Cache, Meter, OpenAIEngine, find_engine
from tracegrad.llm.base import ConfigurationError, make_request
from tracegrad.llm.cache import DEFAULT_MAX_REPLY_BYTES, CacheWarning, request_key
from tracegrad.testing import FakeOpenAIServer, MockLLM


class Answer(BaseModel):
    answer: int


@pytest.fixture
def cached(server, tmp_path):
    return Cache(OpenAIEngine("gpt-4o-mini", base_url=server.url), tmp_path / "c.sqlite3")


def test_repeated_request_is_served_from_cache(server, tmp_path):
    llm = LLM("gpt-4o-mini", base_url=server.url, cache=tmp_path / "c.sqlite3")
    first = llm.chat("What is 2+2?", temperature=0)
    second = llm.chat("What is 2+2?", temperature=0)
    assert server.request_count == 1
    assert not first.cached and second.cached
    assert second.text == first.text
    assert second.usage == first.usage
    total = llm.snapshot()["total"]
    assert (total["calls"], total["cached_calls"]) == (1, 1)
    assert total["prompt_tokens"] == first.usage.prompt_tokens  # the hit cost nothing


def test_cache_off_sends_every_request(server, tmp_path):
    llm = LLM("gpt-4o-mini", base_url=server.url, cache=False)
    llm.chat("same")
    llm.chat("same")
    assert server.request_count == 2


def test_per_call_and_instance_switches(server, cached):
    cached.complete(make_request("q"))
    cached.complete(make_request("q", cache=False))
    assert server.request_count == 2
    cached.enabled = False
    cached.complete(make_request("q"))
    assert server.request_count == 3
    cached.enabled = True
    assert cached.complete(make_request("q")).cached
    assert server.request_count == 3


def test_key_covers_what_decides_the_reply(server, cached):
    base = make_request("q", temperature=0)
    variants = [
        base,
        make_request("q", temperature=1),
        make_request("q", temperature=0, sample_id="2"),
        make_request("q", system="be brief", temperature=0),
        replace(base, model="gpt-4o"),
        replace(base, response_format=Answer),
    ]
    assert len({cached.key(r) for r in variants}) == len(variants)
    # bookkeeping does not change the key
    assert cached.key(replace(base, purpose="judge")) == cached.key(base)
    for r in variants[:5]:
        cached.complete(r)
    assert server.request_count == 5
    for r in variants[:5]:
        assert cached.complete(r).cached
    assert server.request_count == 5


def test_engine_defaults_and_server_are_part_of_the_key(server):
    r = make_request("q")
    a = OpenAIEngine("m", base_url=server.url, temperature=0)
    b = OpenAIEngine("m", base_url=server.url, temperature=1)
    assert Cache(a).key(r) != Cache(b).key(r)
    assert request_key(r) != Cache(a).key(r)


@pytest.mark.parametrize("fault", ["length", "empty", "whitespace"])
def test_failed_replies_are_not_cached(server, cached, fault):
    server.inject(fault)
    cached.complete(make_request("q"))
    assert not cached.complete(make_request("q")).cached
    assert server.request_count == 2
    assert cached.info()["entries"] == 1  # the good second reply


def test_a_reply_over_the_cap_is_returned_but_not_stored(tmp_path):
    big, at_cap = "x" * 101, "y" * 100
    c = Cache(MockLLM([big, big, at_cap]), tmp_path / "c.sqlite3", max_reply_bytes=100)
    assert c.complete(make_request("big")).text == big  # the caller gets all of it
    again = c.complete(make_request("big"))
    assert again.text == big and not again.cached  # ...but it was not stored
    assert c.complete(make_request("fits")).text == at_cap
    assert c.complete(make_request("fits")).cached  # the cap itself is allowed
    info = c.info()
    assert (info["entries"], info["skipped_large"], info["max_reply_bytes"]) == (1, 2, 100)


def test_the_cap_counts_utf8_bytes_not_characters(tmp_path):
    c = Cache(MockLLM(["\u00e9" * 51]), tmp_path / "c.sqlite3", max_reply_bytes=100)
    c.complete(make_request("q"))  # 51 characters, 102 bytes
    assert c.info()["entries"] == 0 and c.info()["skipped_large"] == 1


def test_async_calls_obey_the_cap(tmp_path):
    c = Cache(MockLLM(default="z" * 50), tmp_path / "c.sqlite3", max_reply_bytes=10)

    async def twice() -> list[bool]:
        return [(await c.acomplete(make_request("q"))).cached for _ in range(2)]

    assert asyncio.run(twice()) == [False, False]
    assert c.info()["skipped_large"] == 2


def test_a_1mb_reply_from_the_server_is_returned_whole_but_not_cached(server, tmp_path):
    c = Cache(OpenAIEngine("m", base_url=server.url), tmp_path / "c.sqlite3",
              max_reply_bytes=100_000)
    server.inject("huge")
    assert len(c.complete(make_request("q")).text) == 1_000_000
    assert not c.complete(make_request("q")).cached  # asked the server again
    assert c.complete(make_request("q")).cached  # its normal reply was stored
    assert server.request_count == 2
    assert c.path.stat().st_size < 200_000


def test_cap_from_the_environment_and_its_default(monkeypatch, tmp_path):
    assert Cache(MockLLM()).max_reply_bytes == DEFAULT_MAX_REPLY_BYTES == 1024 * 1024
    monkeypatch.setenv("TRACEGRAD_CACHE_MAX_REPLY_BYTES", " 2048 ")
    assert Cache(MockLLM()).max_reply_bytes == 2048
    assert Cache(MockLLM(), max_reply_bytes=10).max_reply_bytes == 10  # the argument wins
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv("TRACEGRAD_CACHE_MAX_REPLY_BYTES", bad)
        with pytest.raises(ConfigurationError, match="TRACEGRAD_CACHE_MAX_REPLY_BYTES"):
            Cache(MockLLM())
    with pytest.raises(ValueError, match="positive"):
        Cache(MockLLM(), max_reply_bytes=0)


def test_skipped_count_is_kept_in_the_file_until_clear(tmp_path):
    path = tmp_path / "c.sqlite3"
    first = Cache(MockLLM(default="w" * 20), path, max_reply_bytes=10)
    first.complete(make_request("q"))
    first.close()
    later = Cache(MockLLM(), path)  # what `tracegrad cache info` opens
    assert later.info()["skipped_large"] == 1
    later.clear()
    assert later.info()["skipped_large"] == 0


def test_a_cache_file_from_before_the_counters_gains_them(tmp_path):
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, value TEXT NOT NULL, model TEXT,"
                " created REAL)")
    con.close()
    c = Cache(MockLLM(default="v" * 20), path, max_reply_bytes=10)
    c.complete(make_request("q"))
    assert c.info()["skipped_large"] == 1 and c.enabled


def test_a_reply_with_a_lone_surrogate_is_cached_and_read_back(tmp_path):
    # a server's broken escape ("\\ud800") decodes to a str that UTF-8 cannot encode: the
    # paid-for reply was lost to a UnicodeEncodeError from SQLite
    with FakeOpenAIServer(["half an emoji \ud83d here"]) as s:
        c = Cache(OpenAIEngine("m", base_url=s.url), tmp_path / "c.sqlite3")
        first = c.complete(make_request("q"))
        hit = c.complete(make_request("q"))
    assert first.text == hit.text == "half an emoji \ud83d here"
    assert hit.cached and s.request_count == 1
    # the next step quotes it: the key must not fail either (sending it is the engine's
    # business; the OpenAI client refuses, an engine such as MockLLM does not)
    mock = Cache(MockLLM(), tmp_path / "c.sqlite3")
    follow_up = make_request(f"Critique this answer: {first.text}")
    mock.complete(follow_up)
    assert mock.complete(follow_up).cached


def test_structured_replies_round_trip(tmp_path):
    with FakeOpenAIServer(['{"answer": 4}', "not json", '{"answer": 5}']) as s:
        c = Cache(OpenAIEngine("m", base_url=s.url), tmp_path / "c.db")
        r = make_request("2+2?", response_format=Answer)
        assert c.complete(r).parsed == Answer(answer=4)
        hit = c.complete(r)
        assert hit.cached and hit.parsed == Answer(answer=4)
        r2 = make_request("3+2?", response_format=Answer)
        assert c.complete(r2).parsed is None
        assert not c.complete(r2).cached  # an unparsable reply was not stored
        assert s.request_count == 3


def test_async_hits(server, cached):
    async def main():
        a = await cached.acomplete(make_request("q"))
        b = await cached.acomplete(make_request("q"))
        return a, b

    a, b = asyncio.run(main())
    assert not a.cached and b.cached and server.request_count == 1


def test_many_threads_share_one_cache(server, cached):
    def call(i):
        return cached.complete(make_request(f"q{i % 5}")).text

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(call, range(80))) == {"fake reply"}
    assert cached.info()["entries"] == 5
    assert server.request_count < 80


def test_info_and_clear(server, cached):
    for i in range(3):
        cached.complete(make_request(str(i)))
    info = cached.info()
    assert info["entries"] == 3 and info["size_bytes"] > 0
    assert info["path"] == str(cached.path)
    assert cached.clear() == 3
    assert cached.info()["entries"] == 0
    assert not cached.complete(make_request("0")).cached


def test_corrupt_file_is_moved_aside(server, tmp_path):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a sqlite database at all" * 100)
    c = Cache(OpenAIEngine("m", base_url=server.url), path)
    with pytest.warns(CacheWarning, match="moved it"):
        c.complete(make_request("q"))
    assert c.complete(make_request("q")).cached
    aside = list(tmp_path.glob("c.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_unusable_location_warns_and_still_answers(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = Cache(MockLLM(["a", "b"]), blocker / "sub" / "c.sqlite3")
    with pytest.warns(CacheWarning, match="caching is off"):
        assert c.complete(make_request("q")).text == "a"
    assert not c.enabled
    assert c.complete(make_request("q")).text == "b"


def test_env_switch_and_default_location(server, monkeypatch, tmp_path):
    c = Cache(MockLLM())
    assert c.path == tmp_path / "cache-dir" / "cache.sqlite3"
    monkeypatch.setenv("TRACEGRAD_NO_CACHE", "1")
    off = Cache(MockLLM())
    assert not off.enabled
    off.complete(make_request("q"))
    off.complete(make_request("q"))
    assert off.inner.calls == 2


def test_meter_counts_hits_as_cached(server, tmp_path):
    llm = LLM("gpt-4o-mini", base_url=server.url, cache=tmp_path / "c.db")
    for _ in range(3):
        llm.chat("q", purpose="eval")
    snap = find_engine(llm, Meter).snapshot()
    assert snap["by_purpose"]["eval"]["calls"] == 1
    assert snap["by_purpose"]["eval"]["cached_calls"] == 2


def _cache_worker(engine: Cache, worker: int, n: int) -> None:
    for i in range(n):
        shared = engine.complete(make_request(f"shared question {i % 10}"))
        own = engine.complete(make_request(f"worker {worker} question {i}"))
        assert shared.text == own.text == "fake reply"


def test_two_processes_share_one_cache_file(tmp_path):
    path = tmp_path / "shared.sqlite3"
    n = 20
    with FakeOpenAIServer(latency=0.001) as s:
        engine = Cache(OpenAIEngine("m", base_url=s.url), path)
        engine.complete(make_request("opened before the fork"))
        # fork (where available) also checks that children do not reuse the parent's
        # SQLite connection; spawn would only add interpreter start-up time
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        procs = [ctx.Process(target=_cache_worker, args=(engine, w, n)) for w in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        sent = s.request_count - 1
        assert engine.complete(make_request("shared question 3")).cached  # parent sees them
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM replies").fetchone()[0] == 1 + 10 + 2 * n
    conn.close()
    assert 10 + 2 * n <= sent <= 2 * 10 + 2 * n


def test_a_new_cache_file_appears_only_with_its_table(tmp_path, monkeypatch):
    """kill -9 between creating the file and its table left a cache with no table (CI, stop 19):
    the file must appear under its real name already holding the schema, or not at all."""
    import os as _os

    from tracegrad.llm import cache as cache_mod

    path = tmp_path / "c" / "cache.sqlite3"
    seen = []
    real_link = _os.link

    def spy(src, dst):
        con = sqlite3.connect(src)
        seen.append(con.execute("SELECT count(*) FROM replies").fetchone()[0])
        con.close()
        real_link(src, dst)

    monkeypatch.setattr(cache_mod.os, "link", spy)
    Cache(MockLLM(), path)._connection()
    assert seen == [0]
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]

    monkeypatch.setattr(cache_mod, "_SCHEMA", "CREATE TABLE broken (")
    other = tmp_path / "d" / "cache.sqlite3"
    other.parent.mkdir()
    with pytest.raises(sqlite3.Error):
        Cache(MockLLM(), other)._create()
    assert list(other.parent.iterdir()) == []


def test_a_reply_holding_the_key_is_returned_but_never_stored(tmp_path):
    """A server that echoes the Authorization header: the cache file is shared by every run
    and lives longest, so the reply is not written there (scrubbed, it would be a reply the
    server never sent, served forever)."""
    key = "sk-cache-ECHO-0123456789abcdef"
    with FakeOpenAIServer(["fine", "answer"], default="fine", echo_authorization=True) as s:
        c = Cache(OpenAIEngine("m", base_url=s.url, api_key=key), tmp_path / "c.sqlite3")
        echoed = c.complete(make_request("q"))
        assert echoed.text == f"fine\nBearer {key}" and not echoed.cached  # the caller gets it
        assert not c.complete(make_request("q")).cached  # asked again: nothing was stored
        c.close()
    assert c.info()["entries"] == 0 and c.info()["skipped_secret"] == 2
    for f in tmp_path.iterdir():
        assert key.encode() not in f.read_bytes() and b"ECHO-0123456789" not in f.read_bytes()
    clean = Cache(MockLLM(["no secret here"]), tmp_path / "c.sqlite3")
    clean.complete(make_request("q"))
    assert clean.complete(make_request("q")).cached and clean.info()["skipped_secret"] == 2
