"""The tracing hooks without OpenTelemetry: off by default, free when off, and correct
against a stand-in backend (so they are tested even where the otel extra is missing)."""

from __future__ import annotations

import contextlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import tracegrad as tg
from tracegrad.core import telemetry
from tracegrad.llm.telemetry import Traced, with_tracing
from tracegrad.testing import MockLLM

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A backend that keeps spans as dicts: what tracegrad.tracing does, minus OpenTelemetry."""

    capture_content = False

    def __init__(self):
        self.spans = []

    @contextlib.contextmanager
    def span(self, name, kind, attributes):
        rec = {"name": name, "kind": kind, "attrs": dict(attributes), "events": []}

        class Handle:
            def set(self, attrs):
                rec["attrs"].update(attrs)

            def event(self, n, attrs):
                rec["events"].append((n, dict(attrs)))

        try:
            yield Handle()
        except BaseException as e:
            rec["error"] = type(e).__name__
            raise
        finally:
            self.spans.append(rec)


@pytest.fixture
def recorder():
    r = Recorder()
    telemetry.install(r)
    tg.tracing.instrument_optimizers()
    yield r
    telemetry.uninstall()
    tg.tracing.uninstrument_optimizers()


def test_tracing_is_off_by_default_and_imports_nothing():
    code = """
import sys
import tracegrad as tg
from tracegrad.llm.telemetry import Traced
llm = tg.LLM("mock", replies=["7"])
assert not isinstance(llm.inner, Traced)
system = tg.Parameter("Answer.", role="system prompt")
tg.evaluate(lambda q: tg.LLMCall(llm, system=system)(q), [{"q": "a", "answer": "7"}], "exact_match")
assert not tg.tracing.tracing_enabled()
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_hooks_cost_one_read_when_off():
    assert telemetry.backend() is None
    assert telemetry.operation("a") is telemetry.operation("b")  # one shared null context
    with telemetry.operation("backward") as op:
        assert op is None
    engine = MockLLM()
    assert with_tracing(engine) is engine  # no wrapper layer at all


def test_steps_are_wrapped_only_while_tracing_is_on(recorder):
    """Off: step is the optimizer's own function (its warnings point at the caller). On: the
    wrapper keeps the signature, since the trainer passes sample_id only to a step() that
    takes it."""
    assert tg.TGD.step.__wrapped__.__qualname__ == "TGD.step"
    assert "sample_id" in inspect.signature(tg.TGD.step).parameters
    tg.tracing.uninstrument_optimizers()
    assert not hasattr(tg.TGD.step, "__wrapped__")
    assert tg.TGD.step.__qualname__ == "TGD.step"


def test_operations_total_the_calls_inside_them_across_threads(recorder):
    llm = Traced(MockLLM({"pear": "3"}, default="1", model="gpt-4o-mini"))
    qa = tg.LLMCall(llm, system="Count.")
    data = [{"q": f"question {i} pear", "answer": "3"} for i in range(6)]
    with telemetry.operation("outer") as outer:
        tg.evaluate(lambda q: qa(q), data, "exact_match", concurrency=3)
    chats = [s for s in recorder.spans if s["kind"] == "client"]
    evaluate = next(s for s in recorder.spans if s["name"] == "invoke_workflow tracegrad.evaluate")
    assert len(chats) == 6 and outer.calls == 6
    tokens = sum(c["attrs"]["gen_ai.usage.input_tokens"] for c in chats)
    assert evaluate["attrs"]["gen_ai.usage.input_tokens"] == tokens == outer.input_tokens
    assert evaluate["attrs"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert evaluate["attrs"]["tracegrad.eval.score"] == 1.0


def test_events_are_capped_and_the_drop_is_counted(recorder):
    data = [{"q": str(i), "answer": "x"} for i in range(telemetry.MAX_EVENTS + 20)]
    tg.evaluate(lambda q: q, data, "exact_match")
    ev, root = recorder.spans  # the examples' span ends inside the evaluation's root
    assert root["name"] == "invoke_workflow tracegrad.eval" and not root["events"]
    assert len(ev["events"]) == telemetry.MAX_EVENTS
    assert ev["attrs"]["tracegrad.events_dropped"] == 20


def test_a_failing_operation_is_recorded_and_reraised(recorder):
    p = tg.Parameter("v", name="p")
    p.add_feedback("bad")
    with pytest.raises(RuntimeError, match="boom"):
        tg.TGD([p], MockLLM([RuntimeError("boom")])).step()
    (step,) = recorder.spans
    assert step["error"] == "RuntimeError"
    assert step["events"][0][1]["tracegrad.feedback.text"] == "bad"
