"""The run's terminal display prints no secret: a step's result and a message may quote
model or server text (issue 12)."""

from __future__ import annotations

import pytest

from tracegrad.redaction import remember
from tracegrad.train.progress import Progress

KEY = "sk-progress-ECHO-0123456789"


def test_step_lines_and_messages_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    remember(KEY)
    p = Progress(True, 2)
    p.update(phase=f"proposing ({KEY})")
    p.step_done({"step": 1, "train_score": 0.5, "val_score": 0.5, "best_score": 0.5,
                 "result": f"rejected: echoed {KEY}"})
    p.message(f"budget reached: server said Authorization: Bearer {KEY}")
    p.close()
    err = capsys.readouterr().err
    assert "step 1/2" in err and "rejected: echoed [REDACTED]" in err
    assert "Authorization: Bearer [REDACTED]" in err
    assert KEY not in err and KEY not in str(p.status)


# -- live progress of evaluations (issue 16 s5) -------------------------------------------

import io  # noqa: E402
import re  # noqa: E402

from rich.console import Console  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad.llm.meter import Meter  # noqa: E402
from tracegrad.testing import MockLLM  # noqa: E402
from tracegrad.train import progress as progress_mod  # noqa: E402
from tracegrad.train.progress import EvalProgress  # noqa: E402

ROWS = [{"q": f"item {i}", "answer": str(i)} for i in range(6)]


def _counter(engine):
    qa = tg.LLMCall(engine, system="Repeat the number.")
    return lambda q: qa(q)


def _plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_eval_reports_each_example_with_live_calls_when_stderr_is_not_a_terminal() -> None:
    engine = Meter(MockLLM(lambda r: r.messages[-1]["content"].split()[-1], model="gpt-4o-mini"))
    console, buf = _plain_console()
    p = EvalProgress(True, engine.snapshot, console=console, interval=0)
    res = tg.evaluate(_counter(engine), ROWS, metric="exact_match", concurrency=1, progress=p)
    assert res.score == 1.0
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("eval ")]
    counts = [int(re.match(r"eval (\d+)/6 ETA", ln).group(1)) for ln in lines]
    assert counts[:6] == [1, 2, 3, 4, 5, 6]
    calls = [int(re.search(r"calls (\d+)", ln).group(1)) for ln in lines[:6]]
    assert calls == [1, 2, 3, 4, 5, 6]  # the spend so far, not the spend at the start
    assert "tokens" in lines[0] and "$0.0" in lines[0]


def test_status_lines_are_throttled_when_not_a_terminal() -> None:
    console, buf = _plain_console()
    p = EvalProgress(True, None, console=console, interval=3600)
    p.begin("eval", 50)
    for _ in range(50):
        p.advance()
    p.end()
    assert buf.getvalue() == ""  # a fast evaluation prints nothing between its results


def test_the_terminal_table_shows_an_evaluation_in_progress_with_live_usage() -> None:
    spent = {"calls": 0}

    def usage():
        return {"metered": True, "total": {"calls": spent["calls"], "total_tokens": 2500,
                                           "usd": 0.0123}}

    term = Console(file=io.StringIO(), force_terminal=True, width=200)
    p = Progress(True, 4, usage, console=term)
    try:
        assert p.live is not None  # a terminal gets the live table
        p.begin("validation", 6)
        for _ in range(3):
            p.advance()
        spent["calls"] = 962
        out = Console(file=io.StringIO(), width=200, force_terminal=False)
        out.print(p)  # what the next redraw shows
        text = out.file.getvalue()
    finally:
        p.close()
    assert "baseline: validation 3/6 ETA" in text
    assert "962" in text and "2.5k" in text and "$0.0123" in text


def test_optimize_reports_the_baseline_as_it_runs(capsys, monkeypatch, backward_engine,
                                                  tmp_path) -> None:
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL", 0.0)
    engine = Meter(MockLLM(lambda r: "0", model="gpt-4o-mini"))
    system = tg.Parameter("Answer.", role="system prompt", name="system")
    qa = tg.LLMCall(engine, system=system)
    backward_engine.on(r"<new_value>|new value", "<new_value>Count carefully.</new_value>")
    with tg.backward_llm(backward_engine):
        tg.optimize(lambda q: qa(q), ROWS[:4], ROWS, metric="exact_match", steps=1,
                    batch_size=2, concurrency=1, parameters=[system], engine=engine,
                    run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    base = re.findall(r"baseline: validation (\d)/6 ETA \S+  calls (\d+)", err)
    assert [int(n) for n, _ in base][:6] == [1, 2, 3, 4, 5, 6]
    assert [int(c) for _, c in base][:6] == [1, 2, 3, 4, 5, 6]
    assert re.search(r"step 1/1: forward \d/2", err)
    assert "step 1/1  train" in err  # the step's own line still follows


def test_quiet_progress_prints_nothing(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL", 0.0)
    engine = Meter(MockLLM(lambda r: "0", model="gpt-4o-mini"))
    tg.evaluate(_counter(engine), ROWS, metric="exact_match", progress=False)
    tg.evaluate(_counter(engine), ROWS, metric="exact_match", progress=EvalProgress(False))
    assert capsys.readouterr().err == ""
