"""The one way tracegrad runs calls concurrently: in order, in the caller's context."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from tracegrad.core.concurrency import ContextPool, run_concurrently

_setting: contextvars.ContextVar[str] = contextvars.ContextVar("test_setting", default="unset")


def test_results_come_back_in_order_and_run_on_the_named_threads():
    def slow(i: int) -> tuple[int, str]:
        time.sleep(0.02 * (5 - i))
        return i, threading.current_thread().name

    out = run_concurrently(slow, range(5), max_workers=5, thread_name_prefix="tg-probe")
    assert [i for i, _ in out] == [0, 1, 2, 3, 4]
    assert all(name.startswith("tg-probe") for _, name in out)


def test_the_callers_context_reaches_every_worker_and_does_not_leak_back():
    def read_and_set(_: int) -> str:
        seen = _setting.get()
        _setting.set("changed by a worker")
        return seen

    token = _setting.set("from the caller")
    try:
        assert run_concurrently(read_and_set, range(4), max_workers=4) == ["from the caller"] * 4
        assert run_concurrently(read_and_set, [0], max_workers=4) == ["from the caller"]
        with ContextPool(2, "tg-probe") as pool:
            assert pool.map(read_and_set, range(3)) == ["from the caller"] * 3
        assert _setting.get() == "from the caller"
    finally:
        _setting.reset(token)


def test_an_error_cancels_what_has_not_started_and_waits_for_what_runs():
    started: list[int] = []
    finished: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        if i == 0:
            raise ValueError("job 0 failed")
        time.sleep(0.05)
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="job 0 failed"):
        run_concurrently(job, range(20), max_workers=2)
    assert len(started) < 20  # the pending jobs were cancelled
    assert sorted(finished) == sorted(i for i in started if i != 0)  # none still running


def test_the_first_failure_in_job_order_is_the_one_raised():
    def job(i: int) -> int:
        time.sleep(0.05 if i == 0 else 0.0)  # job 1 fails first, while job 0 still runs
        raise RuntimeError(f"job {i}")

    with pytest.raises(RuntimeError, match="job 0"):
        run_concurrently(job, range(2), max_workers=2)


def test_a_long_lived_pool_serves_several_batches_and_closes_idempotently():
    pool = ContextPool(3, "tg-probe")
    assert pool.map(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]
    assert pool.map(lambda x: x + 1, []) == []
    assert pool.submit(lambda a, b: a + b, 2, 3).result() == 5
    pool.close()
    pool.close()


def test_a_shared_pool_is_one_per_name_and_size_and_keeps_the_context():
    from tracegrad.core.concurrency import shared_pool

    a, b = shared_pool(3, "tg-probe-shared"), shared_pool(3, "tg-probe-shared")
    assert a is b and shared_pool(4, "tg-probe-shared") is not a
    token = _setting.set("from the caller")
    try:
        assert a.map(lambda i: _setting.get(), range(3)) == ["from the caller"] * 3
    finally:
        _setting.reset(token)


def test_ctrl_c_while_gathering_waits_for_the_running_jobs(monkeypatch: pytest.MonkeyPatch):
    """Nothing is still calling an LLM once the interrupt surfaces: the pools are shared
    now, so no pool shutdown waits for the running jobs any more; gather does."""
    import tracegrad.core.concurrency as c

    done: list[int] = []
    real_wait = c.wait

    def wait_interrupted_once(fs, return_when=None):
        if return_when is not None:  # the first, waiting for results: Ctrl-C arrives
            raise KeyboardInterrupt
        return real_wait(fs)

    with ContextPool(2, "tg-probe") as pool:
        futures = [pool.submit(lambda: (time.sleep(0.2), done.append(1))) for _ in range(2)]
        futures += [pool.submit(lambda: done.append(2)) for _ in range(4)]  # queued
        time.sleep(0.05)  # the two workers have taken the first two jobs
        monkeypatch.setattr(c, "wait", wait_interrupted_once)
        with pytest.raises(KeyboardInterrupt):
            c.gather(futures)
        assert done.count(1) == 2  # the two running jobs had finished when it raised
    assert 2 not in done  # the queued ones never started


# -- tg.map: the minibatch forward of a hand-written loop ---------------------------------
def test_map_keeps_order_and_context_and_reuses_its_threads():
    import tracegrad as tg

    def probe(i: int) -> tuple[int, str, threading.Thread]:
        time.sleep(0.01 * (4 - i))
        return i, _setting.get(), threading.current_thread()

    token = _setting.set("from the caller")
    try:
        first = tg.map(probe, range(4), concurrency=4)
        second = tg.map(probe, range(4), concurrency=4)
    finally:
        _setting.reset(token)
    assert [i for i, _, _ in first] == [0, 1, 2, 3]
    assert {s for _, s, _ in first + second} == {"from the caller"}
    # threads outlive the call: the second batch runs on threads the first one started
    assert {t for *_, t in second} <= {t for *_, t in first}
    assert all(t.is_alive() for *_, t in first)


def test_map_applies_no_grad_inside_its_workers():
    import tracegrad as tg

    double = tg.op(lambda x: x * 2)
    p = tg.Parameter("3", role="a number")
    with tg.no_grad():
        outs = tg.map(lambda _: double(p), range(3), concurrency=3)
    assert all(not o.requires_grad for o in outs)
    assert all(o.requires_grad for o in tg.map(lambda _: double(p), range(2), concurrency=2))


def test_map_nested_inside_its_own_workers_does_not_deadlock():
    import tracegrad as tg

    def outer(i: int) -> list[int]:
        return tg.map(lambda j: i * 10 + j, range(3), concurrency=2)

    done: list[list[list[int]]] = []
    t = threading.Thread(target=lambda: done.append(tg.map(outer, range(2), concurrency=2)))
    t.start()
    t.join(10)
    assert done == [[[0, 1, 2], [10, 11, 12]]]


def test_map_raises_the_first_failure_after_the_running_items_end():
    import tracegrad as tg

    finished: list[int] = []

    def job(i: int) -> int:
        if i == 1:
            raise KeyError("row 1")
        time.sleep(0.05)
        finished.append(i)
        return i

    with pytest.raises(KeyError, match="row 1"):
        tg.map(job, range(2), concurrency=2)
    assert finished == [0]  # the running item ended before the error surfaced


@pytest.mark.parametrize("bad", [0, -1, None, True])
def test_map_rejects_a_concurrency_that_is_not_a_positive_integer(bad):
    import tracegrad as tg

    with pytest.raises(ValueError, match="concurrency"):
        tg.map(str, range(3), concurrency=bad)


def test_the_readme_minibatch_loop_gets_feedback_for_every_failing_example(backward_engine):
    import tracegrad as tg
    from tracegrad.testing import MockLLM

    llm = MockLLM(default="7")
    system = tg.Parameter("Answer the question.", role="system prompt")
    qa = tg.LLMCall(llm, system=system)
    loss_fn = tg.MetricLoss(tg.metrics.exact_match)
    batch = [("2 + 1?", "3"), ("3 + 4?", "7"), ("1 + 1?", "2")]
    losses = tg.map(lambda ex: loss_fn(qa(ex[0]), ex[1]), batch, concurrency=3)
    assert [v.value.startswith("Wrong") for v in losses] == [True, False, True]
    tg.sum(losses).backward(propagator=tg.TextualPropagator(backward_engine))
    texts = sorted(g.text for g in system.grads)
    # the two wrong answers got a critique each, one call apiece; the right one passes through
    assert texts == ["Correct: expected '7' and got it.", "feedback for system", "feedback for system"]
    assert len(backward_engine.requests) == 2
