"""OpenTelemetry tracing (issue 16 s6), read back from the SDK's in-memory exporter.

Skipped as a whole when the ``otel`` extra is not installed; the tests that tracing is
off by default and imports nothing need no OpenTelemetry and live in
tests/core/test_telemetry.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import tracegrad as tg  # noqa: E402
from tracegrad.llm import cost  # noqa: E402
from tracegrad.llm.base import Usage  # noqa: E402
from tracegrad.llm.telemetry import Traced  # noqa: E402
from tracegrad.testing import FakeOpenAIServer, MockLLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-test-TRACING-SECRET-0123456789"


@pytest.fixture
def spans(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "cache"))
    exporter = InMemorySpanExporter()
    tg.enable_tracing(exporter, batch=False)
    yield exporter
    tg.disable_tracing()


def by_name(exporter, prefix):
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def everything(exporter) -> str:
    return "\n".join(s.to_json() for s in exporter.get_finished_spans())


def test_an_llm_call_is_a_genai_client_span(spans):
    with FakeOpenAIServer(["Paris"]) as server:
        llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False,
                     temperature=0, max_tokens=50)
        c = llm.chat("capital of France?", stop=["\n"], seed=7)
        port = server.port
    (span,) = spans.get_finished_spans()
    a = span.attributes
    assert span.name == "chat gpt-4o-mini" and span.kind == SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"]) == (0, 50)
    assert (a["gen_ai.request.seed"], a["gen_ai.request.stop_sequences"]) == (7, ("\n",))
    assert a["gen_ai.output.type"] == "text" and a["tracegrad.purpose"] == "forward"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == c.usage.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == c.usage.completion_tokens > 0
    assert a["tracegrad.usage.cost_usd"] == pytest.approx(cost("gpt-4o-mini", c.usage))
    assert a["tracegrad.usage.cost_usd"] > 0 and a["tracegrad.usage.priced"] is True
    assert (a["server.address"], a["server.port"]) == ("127.0.0.1", port)
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert "capital of France" not in everything(spans)  # contents are opt-in
    assert SECRET not in everything(spans)


def test_contents_are_opt_in_and_scrubbed_of_keys(spans):
    spans = InMemorySpanExporter()  # enabling again shuts the fixture's provider down
    tg.enable_tracing(spans, batch=False, capture_content=True)
    with FakeOpenAIServer([f"the key is {SECRET}"]) as server:
        llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False)
        llm.chat(f"repeat my key {SECRET} and sk-otherkey1234567890abcdef", system="be brief")
    a = spans.get_finished_spans()[0].attributes
    sent = json.loads(a["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[1]["parts"][0]["content"].startswith("repeat my key [REDACTED]")
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"][0]["content"] == "the key is [REDACTED]"
    text = everything(spans)
    assert SECRET not in text and "sk-otherkey1234567890abcdef" not in text


def test_a_failed_call_is_an_error_span_without_the_key(spans):
    with FakeOpenAIServer() as server:
        server.inject("500", times=10)
        llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False,
                     max_retries=1, backoff_base=0.001)
        with pytest.raises(tg.RetryableError):
            llm.chat("hi")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RetryableError"
    assert [e.name for e in span.events] == ["exception"]
    assert SECRET not in everything(spans)


def test_cache_hits_report_no_usage(spans, tmp_path):
    with FakeOpenAIServer(["4"]) as server:
        llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET,
                     cache=tmp_path / "c.sqlite3")
        llm.chat("2+2?")
        llm.chat("2+2?")
    first, hit = spans.get_finished_spans()
    assert first.attributes["tracegrad.cache_hit"] is False
    assert hit.attributes["tracegrad.cache_hit"] is True
    assert "gen_ai.usage.input_tokens" not in hit.attributes


def pipeline(forward, question="How many fruits: two apples and a pear?"):
    system = tg.Parameter("Answer the question.", role="system prompt", name="system")
    answer = tg.LLMCall(forward, system=system)(tg.Variable(question, role="question"))
    return system, answer


def test_backward_and_step_are_workflow_spans_with_feedback_events(spans, backward_engine):
    forward = tg.tracing.traced(MockLLM(["7"], model="small"))
    optimizer = tg.tracing.traced(
        MockLLM(["<new_value>Count every item, then answer.</new_value>"], model="big"))
    system, answer = pipeline(forward)
    with tg.backward_llm(tg.tracing.traced(backward_engine)):
        tg.TextLoss("Is the count right?")(answer).backward()
        tg.TGD([system], optimizer).step()

    (bwd,) = by_name(spans, "invoke_workflow tracegrad.backward")
    (step,) = by_name(spans, "invoke_workflow tracegrad.optimizer.step")
    chats = {s.attributes["tracegrad.purpose"]: s for s in by_name(spans, "chat ")}
    assert set(chats) == {"forward", "judge", "backward", "optimizer"}
    assert bwd.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert bwd.attributes["gen_ai.workflow.name"] == "tracegrad.backward"
    assert chats["backward"].parent.span_id == bwd.context.span_id
    assert chats["optimizer"].parent.span_id == step.context.span_id
    assert bwd.attributes["tracegrad.llm.calls"] == 1
    assert bwd.attributes["gen_ai.usage.input_tokens"] == chats["backward"].attributes[
        "gen_ai.usage.input_tokens"]
    feedback = [e.attributes for e in bwd.events if e.name == "tracegrad.feedback"]
    on_system = [f for f in feedback if f["tracegrad.variable.name"] == "system"]
    assert on_system and on_system[0]["tracegrad.feedback.text"] == "feedback for system"
    assert on_system[0]["tracegrad.variable.is_parameter"] is True
    assert feedback[0]["tracegrad.variable.name"] == "system"  # parameters first
    assert step.attributes["tracegrad.optimizer"] == "TGD"
    assert step.attributes["tracegrad.step.updated"] == ("system",)
    assert step.attributes["gen_ai.request.model"] == "big"
    (update,) = [e for e in step.events if e.name == "tracegrad.update"]
    assert update.attributes["tracegrad.parameter.value"] == "Count every item, then answer."
    assert any(e.name == "tracegrad.feedback" for e in step.events)


def test_a_step_calling_super_step_is_one_span(spans):
    class Louder(tg.TGD):
        def step(self, sample_id=None):
            return super().step(sample_id)

    p = tg.Parameter("v", name="p")
    p.add_feedback("too quiet")
    Louder([p], tg.tracing.traced(MockLLM(["<new_value>V</new_value>"]))).step()
    (step,) = by_name(spans, "invoke_workflow tracegrad.optimizer.step")
    assert step.attributes["tracegrad.optimizer"] == "Louder"


def test_an_evaluation_totals_its_calls_and_scores_each_example(spans):
    llm = tg.tracing.traced(MockLLM({r"pear": "3", r"kiwi": "5"}, model="gpt-4o-mini"))
    data = [{"question": "two apples and a pear", "answer": "3"},
            {"question": "a banana and a kiwi", "answer": "2"}]
    qa = tg.LLMCall(llm, system="Count.")
    res = tg.evaluate(lambda question: qa(question), data, metric="exact_match", concurrency=2)
    (ev,) = by_name(spans, "invoke_workflow tracegrad.evaluate")
    chats = by_name(spans, "chat ")
    assert len(chats) == 2 and all(c.parent.span_id == ev.context.span_id for c in chats)
    a = ev.attributes
    assert (a["tracegrad.eval.examples"], a["tracegrad.eval.failures"]) == (2, 1)
    assert a["tracegrad.eval.score"] == res.score == 0.5
    assert a["tracegrad.llm.calls"] == 2
    assert a["gen_ai.usage.input_tokens"] == sum(c.attributes["gen_ai.usage.input_tokens"] for c in chats)
    assert a["tracegrad.usage.cost_usd"] == pytest.approx(sum(
        cost("gpt-4o-mini", Usage(c.attributes["gen_ai.usage.input_tokens"],
                                  c.attributes["gen_ai.usage.output_tokens"])) for c in chats))
    results = [e.attributes for e in ev.events if e.name == "gen_ai.evaluation.result"]
    assert [r["gen_ai.evaluation.score.label"] for r in results] == ["fail", "pass"]
    assert results[0]["gen_ai.evaluation.name"] == "exact_match"
    assert results[0]["gen_ai.evaluation.score.value"] == 0.0


def test_an_optimize_run_in_a_user_span_is_one_trace(spans, backward_engine, tmp_path):
    llm = tg.LLM("mock", replies={r"pear": "3"}, default="7")
    system = tg.Parameter("Answer.", role="system prompt", name="system")
    qa = tg.LLMCall(llm, system=system)
    backward_engine.on(r"<new_value>|new value", "<new_value>Count carefully.</new_value>")
    data = [{"question": "two apples and a pear", "answer": "3"},
            {"question": "a banana and a kiwi", "answer": "2"}]
    with tg.tracing.span("nightly", dataset="fruits"):
        tg.optimize(lambda question: qa(question), data, data, metric="exact_match", steps=1,
                    batch_size=2, progress=False, parameters=[system], run_dir=tmp_path / "run")
    all_spans = spans.get_finished_spans()
    assert len({s.context.trace_id for s in all_spans}) == 1
    (root,) = by_name(spans, "invoke_workflow tracegrad.nightly")
    assert root.attributes["tracegrad.dataset"] == "fruits"
    names = {s.name for s in all_spans}
    assert {"invoke_workflow tracegrad.evaluate", "invoke_workflow tracegrad.forward",
            "invoke_workflow tracegrad.backward", "chat mock"} <= names
    splits = {s.attributes.get("tracegrad.eval.split") for s in by_name(spans, "invoke_workflow tracegrad.evaluate")}
    assert "val" in splits


def test_engines_built_before_enabling_are_named_in_a_warning(monkeypatch):
    import weakref

    from tracegrad.core import telemetry

    monkeypatch.setattr(telemetry, "untraced_engines", weakref.WeakSet())
    kept = tg.LLM("mock")  # noqa: F841 -- alive, so still untraced
    tg.LLM("mock")  # gone at once: nothing to warn about
    with pytest.warns(UserWarning, match="1 engine.*traced\\(engine\\)"):
        tg.enable_tracing(InMemorySpanExporter(), batch=False)
    tg.disable_tracing()
    assert not tg.tracing.tracing_enabled()


def test_a_traced_engine_passes_through_once_tracing_is_off():
    inner = MockLLM(["x"])
    exporter = InMemorySpanExporter()
    tg.enable_tracing(exporter, batch=False)
    engine = tg.LLM("mock")
    assert isinstance(engine.inner, Traced)
    tg.disable_tracing()
    assert Traced(inner).chat("q").text == "x" and engine.chat("q").text == "mock reply"
    assert exporter.get_finished_spans() == ()


class _Collector(BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_trace_env_exports_a_cli_run_over_otlp(tmp_path):
    """TRACEGRAD_OTEL=1 and the standard OTLP endpoint variable: a real OTLP/HTTP export,
    received by a stand-in collector, one trace rooted at the command."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    httpd = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    script = tmp_path / "run.py"
    script.write_text("import tracegrad as tg\ntg.LLM('mock').chat('hi')\n")
    env = {**os.environ, "TRACEGRAD_OTEL": "1", "PYTHONPATH": str(ROOT),
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{httpd.server_port}",
           "OTEL_SERVICE_NAME": "my-evals", "OPENAI_API_KEY": SECRET}
    proc = subprocess.run([sys.executable, str(script), "--api-key", SECRET], env=env,
                          capture_output=True, text=True, timeout=60)
    httpd.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert _Collector.bodies and all(p == "/v1/traces" for p, _, _ in _Collector.bodies)
    assert _Collector.bodies[0][1] == "application/x-protobuf"
    spans, services = [], set()
    for _, _, body in _Collector.bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"}
            spans += [s for ss in rs.scope_spans for s in ss.spans]
    assert services == {"my-evals"}
    names = sorted(s.name for s in spans)
    assert names == ["chat mock", "invoke_workflow run.py"]
    assert len({s.trace_id for s in spans}) == 1
    assert SECRET.encode() not in b"".join(b for _, _, b in _Collector.bodies)



def _ancestors(span, by_id):
    out = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span)
    return out


def _one_root(exporter, name):
    """The run's spans form one tree: a single root, named ``name``, above every span."""
    all_spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in all_spans}
    roots = [s for s in all_spans if s.parent is None or s.parent.span_id not in by_id]
    assert [r.name for r in roots] == [name], [r.name for r in roots]
    (root,) = roots
    assert len({s.context.trace_id for s in all_spans}) == 1
    for s in all_spans:
        if s is not root:
            assert _ancestors(s, by_id)[-1] is root, s.name
    return root, all_spans, by_id


def test_an_optimize_run_is_one_trace_under_a_tracegrad_optimize_root(spans, backward_engine,
                                                                      tmp_path):
    llm = tg.tracing.traced(MockLLM({r"pear": "3"}, default="7", model="gpt-4o-mini"))
    system = tg.Parameter("Answer.", role="system prompt", name="system")
    qa = tg.LLMCall(llm, system=system)
    backward_engine.on(r"<new_value>|new value", "<new_value>Count carefully.</new_value>")
    data = [{"question": "two apples and a pear", "answer": "3"},
            {"question": "a banana and a kiwi", "answer": "2"}]
    with tg.backward_llm(tg.tracing.traced(backward_engine)):
        tg.optimize(lambda question: qa(question), data, data, metric="exact_match", steps=2,
                    batch_size=2, progress=False, parameters=[system], run_dir=tmp_path / "run")
    root, all_spans, by_id = _one_root(spans, "invoke_workflow tracegrad.optimize")
    a = root.attributes
    assert a["gen_ai.operation.name"] == "invoke_workflow"
    assert a["gen_ai.workflow.name"] == "tracegrad.optimize"
    assert (a["tracegrad.steps"], a["tracegrad.metric"]) == (2, "exact_match")
    steps = [s for s in all_spans if s.name == "invoke_workflow tracegrad.step"]
    assert sorted(s.attributes["tracegrad.step"] for s in steps) == [1, 2]
    assert all(s.parent.span_id == root.context.span_id for s in steps)
    chats = [s for s in all_spans if s.name.startswith("chat ")]
    purposes = {c.attributes["tracegrad.purpose"] for c in chats}
    assert {"forward", "backward", "optimizer"} <= purposes
    # every call nests under a step, except the baseline's (its evaluate span is the root's)
    for c in chats:
        chain = _ancestors(c, by_id)
        assert any(x in steps for x in chain) or any(
            x.attributes.get("tracegrad.eval.split") == "val"
            and x.parent.span_id == root.context.span_id for x in chain), c.name
    assert a["tracegrad.llm.calls"] == len(chats)  # the root totals every call


def test_an_evaluation_is_one_trace_under_a_tracegrad_eval_root(spans):
    llm = tg.tracing.traced(MockLLM({r"pear": "3", r"kiwi": "5"}, model="gpt-4o-mini"))
    data = [{"question": "two apples and a pear", "answer": "3"},
            {"question": "a banana and a kiwi", "answer": "2"}]
    qa = tg.LLMCall(llm, system="Count.")
    tg.evaluate(lambda question: qa(question), data, metric="exact_match", concurrency=2)
    root, all_spans, _ = _one_root(spans, "invoke_workflow tracegrad.eval")
    assert root.attributes["gen_ai.workflow.name"] == "tracegrad.eval"
    assert root.attributes["tracegrad.eval.examples"] == 2
    assert root.attributes["tracegrad.llm.calls"] == 2
    assert len([s for s in all_spans if s.name.startswith("chat ")]) == 2
def test_a_batched_evaluation_has_no_error_spans_and_batch_prices(spans, tmp_path):
    with FakeOpenAIServer(lambda body: "4") as server:
        llm = tg.LLM("openai:gpt-4o-mini", base_url=server.url, api_key=SECRET, cache=False)
        qa = tg.LLMCall(llm)
        rows = [{"question": f"q{i}", "answer": "4"} for i in range(3)]
        res = tg.evaluate(lambda question: qa(tg.Variable(question, role="q")), rows,
                          batch=tg.BatchOptions(run_dir=tmp_path / "run", poll_interval=0.01))
    assert res.score == 1.0
    chats = by_name(spans, "chat ")
    deferred = [s for s in chats if s.attributes.get("tracegrad.batch.deferred")]
    answered = [s for s in chats if not s.attributes.get("tracegrad.batch.deferred")]
    assert len(deferred) == len(answered) == 3
    assert all(s.status.status_code != StatusCode.ERROR for s in chats)
    a = answered[0].attributes
    usage = Usage(a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"])
    assert a["tracegrad.usage.cost_usd"] == pytest.approx(cost("gpt-4o-mini", usage) / 2)
