"""The Batch API path, through the real openai client against FakeOpenAIServer's
/v1/files and /v1/batches: same scores as live, half the cost, failures retried,
cached requests left out, parts split, the budget reserved before submitting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tracegrad as tg
from tracegrad.llm import Budget, BudgetExceeded, set_pricing
from tracegrad.llm.batch import BatchOptions
from tracegrad.llm.batchjournal import BatchJournal
from tracegrad.testing import FakeOpenAIServer

SECRET = "sk-test-SECRET-1234567890"


def reply(body: dict[str, Any]) -> str:
    """Echo the number after 'say' -- except for 7, which it gets wrong."""
    n = body["messages"][-1]["content"].split()[-1]
    return "8" if n == "7" else n


def rows(n: int) -> list[dict[str, str]]:
    return [{"question": f"row {i}: say {i}", "answer": str(i)} for i in range(n)]


def program(llm: Any) -> Any:
    qa = tg.LLMCall(llm)
    return lambda question: qa(tg.Variable(question, role="question"))


def llm_on(server: FakeOpenAIServer, **kw: Any) -> Any:
    kw.setdefault("cache", False)
    return tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET,
                  backoff_base=0.001, **kw)


def opts(tmp_path: Path, **kw: Any) -> BatchOptions:
    return BatchOptions(run_dir=tmp_path / "run", poll_interval=0.01, **kw)


def test_500_rows_through_a_batch_score_as_live_at_half_the_cost(tmp_path: Path) -> None:
    data = rows(500)
    with FakeOpenAIServer(reply, batch_delay=0.05) as server:
        live_llm = llm_on(server)
        live = tg.evaluate(program(live_llm), data, "exact_match")
        assert server.request_count == 500
        server.reset()
        batch_llm = llm_on(server)
        res = tg.evaluate(program(batch_llm), data, "exact_match", batch=opts(tmp_path))
        assert server.request_count == 0  # not one live chat call
        assert server.batch.created == 1
        assert server.batch.lines_answered == 500
    assert res.scores == live.scores
    assert res.score == live.score == pytest.approx(499 / 500)
    assert [o.output for o in res.outcomes] == [o.output for o in live.outcomes]
    live_t, batch_t = live_llm.snapshot()["total"], batch_llm.snapshot()["total"]
    assert batch_t["calls"] == live_t["calls"] == 500
    assert batch_t["total_tokens"] == live_t["total_tokens"]
    assert batch_t["usd"] == pytest.approx(live_t["usd"] / 2)
    assert res.batch is not None
    assert res.batch["lines"] == 500 and res.batch["batches_submitted"] == 1


def test_the_journal_records_ids_and_the_input_before_results(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        tg.evaluate(program(llm_on(server)), rows(5), "exact_match", batch=opts(tmp_path))
    journal = BatchJournal(tmp_path / "run")
    (part,) = journal.parts
    assert part["status"] == "completed"
    assert part["batch_id"] == "batch_fake1" and part["input_file_id"] == "file-fake1"
    assert part["output_file_id"] and part["lines"] == 5
    assert len(journal.keys(part)) == 5
    lines = (tmp_path / "run" / "batches" / "part-0001.jsonl").read_text().splitlines()
    assert len(lines) == 5 and '"url": "/v1/chat/completions"' in lines[0]
    assert SECRET not in (tmp_path / "run" / "batches" / "journal.json").read_text()


def test_per_line_errors_are_retried_live(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        server.batch.fail_lines(4, status=500)
        res = tg.evaluate(program(llm_on(server)), rows(20), "exact_match", batch=opts(tmp_path))
        assert server.batch.created == 1
        assert server.request_count == 4  # the 4 failed lines, live
    assert res.score == pytest.approx(19 / 20)
    assert res.batch["failed_lines"] == 4 and res.batch["retried_live"] == 4


def test_many_failed_lines_go_to_a_new_batch(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        server.batch.fail_lines(6, status=500)
        res = tg.evaluate(program(llm_on(server)), rows(20), "exact_match",
                          batch=opts(tmp_path, live_retry_max=3))
        assert server.batch.created == 2
        assert server.request_count == 0
    assert res.score == pytest.approx(19 / 20)
    assert res.batch["retried_in_batch"] == 6


def test_an_expired_batch_keeps_its_done_lines_and_retries_the_rest(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        server.batch.expire_next(done_fraction=0.5)
        res = tg.evaluate(program(llm_on(server)), rows(10), "exact_match", batch=opts(tmp_path))
        assert server.batch.lines_answered == 5
        assert server.request_count == 5
    assert res.score == pytest.approx(9 / 10)
    assert res.batch["expired"] == 1 and res.batch["retried_live"] == 5


def test_failures_are_bounded_a_server_that_keeps_failing_stops_the_eval(
        tmp_path: Path) -> None:
    """Lines that fail in the batch and again live: the retries end, and the error says so
    (a server that keeps failing says nothing about the examples, so it is not a score)."""
    with FakeOpenAIServer(reply) as server:
        server.batch.fail_lines(2, status=500)
        server.inject("500", times=100)  # live retries fail too
        with pytest.raises(tg.RetryableError, match="gave up after 2 attempts"):
            tg.evaluate(program(llm_on(server, max_retries=1)), rows(6), "exact_match",
                        batch=opts(tmp_path))
        assert server.batch.created == 1
        assert server.request_count <= 4  # 2 lines x 2 attempts, nothing more


def test_cached_requests_stay_out_of_the_batch_and_results_go_into_the_cache(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    with FakeOpenAIServer(reply) as server:
        tg.evaluate(program(llm_on(server, cache=cache)), rows(6), "exact_match")  # 6 cached
        server.reset()
        first = tg.evaluate(program(llm_on(server, cache=cache)), rows(10), "exact_match",
                            batch=opts(tmp_path))
        assert server.batch.lines_answered == 4 and server.batch.created == 1
        again = tg.evaluate(program(llm_on(server, cache=cache)), rows(10), "exact_match",
                            batch=opts(tmp_path / "other"))
        assert server.batch.created == 1 and server.request_count == 0
    assert first.scores == again.scores


def test_a_batch_over_the_size_limits_is_split(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        res = tg.evaluate(program(llm_on(server)), rows(25), "exact_match",
                          batch=opts(tmp_path, max_lines=10))
        assert server.batch.created == 3
        small = tg.evaluate(program(llm_on(server)), rows(4), "exact_match",
                            batch=opts(tmp_path / "bytes", max_bytes=400))
        assert server.batch.created == 7  # each line alone is over half of 400 bytes
    assert res.score == pytest.approx(24 / 25) and small.score == 1.0


def test_the_budget_reserves_the_whole_batch_before_submitting(tmp_path: Path) -> None:
    set_pricing({"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}})
    try:
        with FakeOpenAIServer(reply) as server:
            llm = llm_on(server, budget=Budget(usd=5.0))  # one call fits, 50 do not
            with pytest.raises(BudgetExceeded, match="a batch of 50 calls"):
                tg.evaluate(program(llm), rows(50), "exact_match", batch=opts(tmp_path))
            assert server.batch.created == 0 and not server.batch.files
            assert llm.snapshot()["total"]["errors"] == 0  # deferring is not an error
    finally:
        set_pricing(None)


def test_a_chain_takes_one_round_per_link(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        llm = llm_on(server)
        first, second = tg.LLMCall(llm), tg.LLMCall(llm)

        def chain(question: str) -> Any:
            n = first(tg.Variable(question, role="question"))
            return second(tg.Variable(f"again say {n.value}", role="question"))

        res = tg.evaluate(chain, rows(9), "exact_match", batch=opts(tmp_path))
        assert server.batch.created == 2 and server.request_count == 0
    assert res.score == pytest.approx(8 / 9)  # row 7: "8", then "again say 8": "8"
    assert res.batch["rounds"] == 2


def test_an_engine_without_a_batch_api_runs_live_with_a_note(tmp_path: Path) -> None:
    llm = tg.LLM("mock", replies=lambda req: "1")
    res = tg.evaluate(program(llm), rows(3), "exact_match", batch=opts(tmp_path))
    assert res.score == pytest.approx(1 / 3)
    assert "ran live" in res.batch["note"]


def test_the_pricing_table_has_a_batch_column_and_overrides_may_set_it() -> None:
    from tracegrad.llm.base import Usage
    from tracegrad.llm.pricing import price_for, pricing_table

    table = pricing_table()
    assert table["gpt-4o-mini"]["batch_input"] == pytest.approx(0.075)
    assert table["gpt-4o"]["batch_output"] == pytest.approx(5.0)
    u = Usage(1_000_000, 1_000_000)
    set_pricing({"my-model": {"input": 1.0, "output": 2.0, "batch_input": 0.1,
                              "batch_output": 0.2}, "plain": {"input": 1.0, "output": 2.0}})
    try:
        assert price_for("my-model").cost(u, batch=True) == pytest.approx(0.3)
        assert price_for("plain").cost(u, batch=True) == pytest.approx(1.5)  # half by default
        assert price_for("plain").cost(u) == pytest.approx(3.0)
    finally:
        set_pricing(None)


def test_a_request_holding_a_key_is_sent_live_and_never_written(tmp_path: Path) -> None:
    data = [*rows(3), {"question": f"my key is {SECRET} say 5", "answer": "5"}]
    with FakeOpenAIServer(reply) as server:
        res = tg.evaluate(program(llm_on(server)), data, "exact_match", batch=opts(tmp_path))
        assert server.batch.lines_answered == 3 and server.request_count == 1
    assert res.score == 1.0 and res.batch["withheld_secret"] == 1
    assert "failed_lines" not in res.batch
    for f in (tmp_path / "run" / "batches").iterdir():
        assert SECRET not in f.read_text()


def test_a_finished_part_whose_output_is_gone_is_retried(tmp_path: Path) -> None:
    """A later run of the same run dir re-downloads finished parts; a provider that
    deleted the file (or a cut stream) makes those requests retried, not lost."""
    with FakeOpenAIServer(reply) as server:
        first = tg.evaluate(program(llm_on(server)), rows(6), "exact_match", batch=opts(tmp_path))
        out_id = server.batch.batches["batch_fake1"]["output_file_id"]
        server.batch._content.pop(out_id)
        again = tg.evaluate(program(llm_on(server)), rows(6), "exact_match", batch=opts(tmp_path))
        assert server.batch.created == 1 and server.request_count == 6
    assert again.scores == first.scores
    assert again.batch["resumed_parts"] == 1 and again.batch["retried_live"] == 6


def test_requests_for_two_models_go_to_two_batches(tmp_path: Path) -> None:
    with FakeOpenAIServer(reply) as server:
        llm = llm_on(server)
        mini, big = tg.LLMCall(llm), tg.LLMCall(llm, model="gpt-4o")

        def both(question: str) -> Any:
            mini(tg.Variable(question, role="question"))
            return big(tg.Variable(question, role="question"))

        res = tg.evaluate(both, rows(4), "exact_match", batch=opts(tmp_path))
        models = sorted({json.loads(line)["body"]["model"]
                         for part in BatchJournal(tmp_path / "run").parts
                         for line in (tmp_path / "run" / "batches" / f"{part['name']}.jsonl"
                                      ).read_text().splitlines()})
        assert server.batch.created == 2 and server.request_count == 0
    assert models == ["gpt-4o", "gpt-4o-mini"]
    assert res.score == 1.0


def test_progress_counts_each_example_once_though_a_batch_reruns_them(tmp_path: Path) -> None:
    class Count:
        def __init__(self) -> None:
            self.total, self.done = 0, 0

        def begin(self, label: str, total: int) -> None:
            self.total = total

        def advance(self) -> None:
            self.done += 1

        def end(self) -> None:
            pass

    seen = Count()
    with FakeOpenAIServer(reply) as server:
        tg.evaluate(program(llm_on(server)), rows(12), "exact_match", batch=opts(tmp_path),
                    progress=seen)
        assert server.batch.created == 1
    assert (seen.total, seen.done) == (12, 12)
