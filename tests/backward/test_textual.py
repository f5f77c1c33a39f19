import json

import tracegrad as tg
from tracegrad.testing import MockLLM

from ..conftest import backward_reply, feedback_keys


def build_pipeline(forward):
    """Two LLM calls with an @tg.op between them, plus a frozen side call."""
    first = tg.Parameter("Answer the question step by step.", role="system prompt of solver")
    second = tg.Parameter("Give only the final number.", role="system prompt of formatter")
    frozen = tg.Parameter("Translate to French.", role="frozen prompt", requires_grad=False)
    question = tg.Variable("I have two apples and a pear. How many fruits?", role="question")

    @tg.op
    def tidy(text: str) -> str:
        """Remove surrounding whitespace."""
        return text.strip()

    solved = tg.LLMCall(forward, system=first)(question)
    side = tg.LLMCall(forward, system=frozen)(question)  # no trainable ancestor
    combined = tg.concat(tidy(solved), side)
    final = tg.LLMCall(forward, system=second)(combined)
    return final, (first, second), (frozen, question)


def test_every_trainable_parameter_gets_feedback_and_calls_are_exact(backward_engine):
    forward = MockLLM(default="7")
    final, trainable, frozen = build_pipeline(forward)
    loss = tg.TextLoss("Is the answer correct?")(final)
    assert backward_engine.calls == 1  # the judge
    result = loss.backward()
    # LLM nodes with a trainable ancestor: solver and formatter. The side call has none.
    assert result.calls == 2
    assert backward_engine.calls_for("backward") == 2
    assert backward_engine.calls == 3  # judge + 2
    for p in trainable:
        assert p.grads, f"{p.role} got no feedback"
    for v in frozen:
        assert v.grads == []
    # the formatter's prompt got the feedback written for its 'system' key
    assert trainable[1].grads[0].text == "feedback for system"
    # the solver's request showed the feedback that flowed back through tidy/concat
    solver_req = [t for t in backward_engine.texts("backward") if "step by step" in t][0]
    assert "feedback for input" in solver_req


def test_calls_of_one_generation_overlap_within_the_limit():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply}, latency=0.05)
    forward = MockLLM(default="7")
    system = tg.Parameter("Answer.", role="system prompt")
    call = tg.LLMCall(forward, system=system)
    losses = [tg.MetricLoss(lambda p, e: 0.0)(call(f"q{i}"), "3") for i in range(9)]
    total = tg.aggregate(losses)
    result = total.backward(propagator=tg.TextualPropagator(engine, max_concurrency=3))
    assert result.calls == 9
    assert 1 < engine.max_in_flight <= 3
    # each example's feedback reached the prompt once, not the batch text nine times
    assert len(system.grads) == 9


def test_a_second_backward_starts_no_threads():
    """Each backward used to start its own pool: a thread per call, 0.2 s at batch 256."""
    import threading

    engine = MockLLM({r"Inputs to give feedback on": backward_reply}, latency=0.02)
    forward = MockLLM(default="7")
    system = tg.Parameter("Answer.", role="system prompt")
    call = tg.LLMCall(forward, system=system)
    prop = tg.TextualPropagator(engine, max_concurrency=5)

    def names() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("tg-backward")}

    for step in range(3):
        losses = [tg.MetricLoss(lambda p, e: 0.0)(call(f"q{step}.{i}"), "3") for i in range(5)]
        assert tg.aggregate(losses).backward(propagator=prop).calls == 5
        if step == 0:
            first = names()
    assert names() == first and 1 < len(first) <= 5


def test_batched_feedback_groups_a_shared_prompt_into_one_call():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply})
    forward = MockLLM(default="7")
    system = tg.Parameter("Answer.", role="system prompt", name="qa_prompt")
    call = tg.LLMCall(forward, system=system)
    losses = [tg.MetricLoss(lambda p, e: 0.0)(call(f"question {i}"), "3") for i in range(16)]
    result = tg.aggregate(losses).backward(
        propagator=tg.TextualPropagator(engine, batch_feedback=True)
    )
    assert result.calls == 1
    keys = feedback_keys(engine.requests[0])
    assert keys == ["system"]  # the same key as in per-node mode
    assert engine.requests[0].messages[-1]["content"].count("## Run #") == 16
    assert engine.requests[0].messages[-1]["content"].count("Answer.") == 1  # shown once
    assert system.grads[0].text == "feedback for system"


def test_batched_key_falls_back_to_the_parameter_name_when_roles_differ():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply})
    forward = MockLLM(default="7")
    shared = tg.Parameter("Be exact.", role="shared instruction", name="rules")
    outs = [tg.LLMCall(forward, system=shared)("q1"), tg.FormattedLLMCall(forward, shared)()]
    losses = [tg.MetricLoss(lambda p, e: 0.0)(o, "3") for o in outs]
    result = tg.aggregate(losses).backward(
        propagator=tg.TextualPropagator(engine, batch_feedback=True)
    )
    assert result.calls == 1
    assert feedback_keys(engine.requests[0]) == ["rules"]  # 'system' in one, 'template' in the other
    assert shared.grads[0].text == "feedback for rules"


def test_batched_feedback_is_chunked_to_the_budget():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply})
    forward = MockLLM(default="x" * 900)
    system = tg.Parameter("Answer.", role="system prompt", name="qa_prompt")
    call = tg.LLMCall(forward, system=system)
    losses = [tg.MetricLoss(lambda p, e: 0.0)(call(f"question {i}"), "3") for i in range(16)]
    result = tg.aggregate(losses).backward(
        propagator=tg.TextualPropagator(engine, batch_feedback=True, chunk_chars=5000)
    )
    assert 2 <= result.calls <= 8
    assert all(len(r.messages[-1]["content"]) < 12000 for r in engine.requests)


def test_malformed_reply_is_repaired_once():
    replies = iter(["no json here", json.dumps({"system": "be shorter"})])
    engine = MockLLM(lambda req: next(replies))
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="7"), system=system)("q")
    out.backward("wrong answer", propagator=tg.TextualPropagator(engine))
    assert engine.calls == 2
    assert "could not be used" in engine.texts()[1]
    assert system.grads[0].text == "be shorter"


def test_twice_malformed_reply_falls_back_and_is_recorded():
    engine = MockLLM(default="still not json")
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="7"), system=system)("q")
    result = out.backward("wrong answer", propagator=tg.TextualPropagator(engine))
    assert engine.calls == 2
    assert result.events and result.events[0]["event"] == "backward_fallback"
    assert system.grads[0].text == "wrong answer"
    assert system.grads[0].context.get("fallback") is True


def test_backward_on_a_non_objective_needs_feedback():
    out = tg.concat(tg.Parameter("a"), "b")
    try:
        out.backward(propagator=tg.TracePropagator())
    except ValueError as e:
        assert "feedback=" in str(e)
    else:
        raise AssertionError("backward without an objective or feedback did not fail")


def test_long_values_are_shortened_with_a_marker():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply})
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="y" * 50_000), system=system)("x" * 50_000)
    out.backward("too long", propagator=tg.TextualPropagator(engine, value_limit=1000))
    text = engine.texts()[0]
    assert "characters omitted" in text
    assert len(text) < 6000


def test_correct_examples_pass_through_without_a_call():
    engine = MockLLM({r"Inputs to give feedback on": backward_reply})
    forward = MockLLM(["3", "7", "3", "9"])
    system = tg.Parameter("Answer.", role="system prompt")
    call = tg.LLMCall(forward, system=system)
    metric = tg.MetricLoss(lambda p, e: p == e)
    losses = [metric(call(f"q{i}"), "3") for i in range(4)]
    result = tg.aggregate(losses).backward(propagator=tg.TextualPropagator(engine))
    assert result.calls == 2  # only the two wrong answers cost a backward call
    texts = [g.text for g in system.grads]
    assert texts.count("feedback for system") == 2
    assert sum(t.startswith("Correct") for t in texts) == 2
    assert sum(bool(g.context.get("success")) for g in system.grads) == 2  # verdict survives


def test_a_contextvar_set_by_the_caller_is_visible_inside_the_backward_workers():
    import contextvars
    import threading

    setting: contextvars.ContextVar[str] = contextvars.ContextVar("bw_setting", default="unset")
    seen: list[tuple[str, str]] = []

    def reply(request):
        seen.append((setting.get(), threading.current_thread().name))
        return backward_reply(request)

    engine = MockLLM({r"Inputs to give feedback on": reply}, latency=0.02)
    system = tg.Parameter("Answer.", role="system prompt")
    call = tg.LLMCall(MockLLM(default="7"), system=system)
    losses = [tg.MetricLoss(lambda p, e: 0.0)(call(f"q{i}"), "3") for i in range(4)]
    token = setting.set("set by the caller")
    try:
        tg.aggregate(losses).backward(propagator=tg.TextualPropagator(engine, max_concurrency=4))
    finally:
        setting.reset(token)
    assert len(seen) == 4
    assert all(name.startswith("tg-backward") for _, name in seen)  # really on the workers
    assert [v for v, _ in seen] == ["set by the caller"] * 4


def test_a_structured_reply_reaches_the_parameter_as_labelled_lines_and_no_change_drops():
    system = tg.Parameter("Answer.", role="system prompt")
    reply = json.dumps({
        "system": {"diagnosis": "the unit is missing", "evidence": "got '3'",
                   "change": "ask for the unit"},
        "input": {"diagnosis": "fine", "change": "no change needed"},
    })
    engine = MockLLM(lambda r: reply if r.purpose == "backward" else "3")
    question = tg.Variable("How far?", role="question", requires_grad=True)
    out = tg.LLMCall(engine, system=system)(question)
    out.backward("the answer needs a unit", engine=engine)
    assert system.grads[0].text == ("Diagnosis: the unit is missing\nEvidence: got '3'\n"
                                    "Change: ask for the unit")
    assert question.grads == []
    asked = engine.requests[-1].messages[0]["content"]
    assert '"diagnosis"' in asked and "general rule" in asked
