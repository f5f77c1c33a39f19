"""TGD: what it sends, how many calls it makes, and what it does with bad replies."""

from __future__ import annotations

import json
import re

import pytest

import tracegrad as tg
from tracegrad.backward import TextualPropagator
from tracegrad.llm.base import Request
from tracegrad.optim import TGD, StepResult
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text


def user_text(req: Request) -> str:
    return req.messages[1]["content"]


def name_in(req: Request) -> str:
    m = re.search(r"^name: (\S+)$", user_text(req), re.M)
    assert m, "the update request names the variable"
    return m.group(1)


def renamer(req: Request) -> str:
    """Reply with a new value derived from the variable the request is about."""
    return f"Thinking...\n<new_value>{name_in(req)} improved</new_value>"


class BudgetExceeded(Exception):
    """Stands in for tracegrad.llm.meter.BudgetExceeded: any engine error must propagate."""


def test_rewrites_exactly_the_trainable_parameters_with_feedback_one_call_each():
    a = tg.Parameter("alpha", name="a")
    b = tg.Parameter("beta", name="b")
    c = tg.Parameter("gamma", name="c")  # no feedback
    d = tg.Parameter("delta", name="d", requires_grad=False)  # frozen, but has feedback
    for p in (a, b, d):
        p.add_feedback(f"{p.name} is too vague")
    llm = MockLLM(renamer)
    result = TGD([a, b, c, d], llm).step()

    assert llm.calls == 2 and result.calls == 2
    assert sorted(name_in(r) for r in llm.requests) == ["a", "b"]
    assert all(r.purpose == "optimizer" for r in llm.requests)
    assert (a.value, b.value, c.value, d.value) == ("a improved", "b improved", "gamma", "delta")
    assert result.updated == {"a": "a improved", "b": "b improved"}
    assert result.previous == {"a": "alpha", "b": "beta"}
    assert sorted(result.unchanged) == ["c", "d"]


def test_request_holds_the_full_long_value_and_its_feedback():
    long_value = "".join(f"Rule {i}: answer in the unit asked for. " for i in range(200)) + "END-MARKER"
    assert len(long_value) > 5000
    p = tg.Parameter(long_value, role="system prompt", name="sys")
    p.add_feedback(tg.Feedback("Answers omit the unit.", source="loss7",
                               context={"op": "y = llm_call(system=sys)", "output": "42"}))
    llm = MockLLM(["<new_value>short</new_value>"])
    TGD([p], llm).step()
    text = user_text(llm.requests[0])
    assert long_value in text
    assert "characters omitted" not in text
    assert "Answers omit the unit." in text and "y = llm_call(system=sys)" in text
    assert "role: system prompt" in text


def test_updates_run_concurrently_within_the_limit():
    params = [tg.Parameter(f"v{i}", name=f"p{i}") for i in range(6)]
    for p in params:
        p.add_feedback("improve it")
    llm = MockLLM(renamer, latency=0.05)
    TGD(params, llm, max_concurrency=3).step()
    assert llm.calls == 6
    assert 1 < llm.max_in_flight <= 3


def test_missing_tags_get_one_repair_then_apply():
    p = tg.Parameter("Be helpful.", name="sys")
    p.add_feedback("Say that answers must be one word.")
    llm = MockLLM(["The prompt should require one-word answers.",
                   "<new_value>Be helpful. Answer in one word.</new_value>"])
    result = TGD([p], llm).step()
    assert llm.calls == 2 and result.calls == 2
    assert p.value == "Be helpful. Answer in one word."
    repair = llm.requests[1]
    assert repair.messages[-2] == {"role": "assistant",
                                   "content": "The prompt should require one-word answers."}
    assert "no <new_value>" in repair.messages[-1]["content"]
    assert [e["event"] for e in result.events] == ["repair"]


def test_missing_tags_twice_keeps_the_value_and_records_the_event():
    p = tg.Parameter("Be helpful.", name="sys")
    p.add_feedback("Say that answers must be one word.")
    llm = MockLLM(["no tags here", "<new_value>unterminated"])
    result = TGD([p], llm).step()
    assert llm.calls == 2
    assert p.value == "Be helpful."
    assert result.updated == {} and result.unchanged == ["sys"]
    kinds = [e["event"] for e in result.events]
    assert kinds == ["repair", "missing_tags"]
    assert "never closes" in result.events[-1]["detail"]
    assert [e["event"] for e in p.events] == kinds


def test_empty_value_is_repaired():
    p = tg.Parameter("Be helpful.", name="sys")
    p.add_feedback("shorter")
    llm = MockLLM(["<new_value>  \n</new_value>", "<new_value>Be brief.</new_value>"])
    result = TGD([p], llm).step()
    assert p.value == "Be brief."
    assert "empty_value" in result.events[0]["detail"]


def test_template_losing_a_placeholder_is_rejected_after_one_repair():
    p = tg.Parameter("Q: {{ question }}\nA:", role="prompt template", name="tpl")
    assert p.value_kind == "template"
    p.add_feedback("Ask for step-by-step reasoning.")
    llm = MockLLM(["<new_value>Think step by step.\nA:</new_value>",
                   "<new_value>Reason step by step, then answer.</new_value>"])
    result = TGD([p], llm).step()
    assert llm.calls == 2
    assert p.value == "Q: {{ question }}\nA:"
    assert "{{ question }}" in llm.requests[1].messages[-1]["content"]
    final = result.events[-1]
    assert final["event"] == "constraint_violation" and "question" in final["detail"]
    # the constraint was also stated up front
    assert "{{ question }}" in user_text(llm.requests[0]).split("## Constraints")[1]


def test_template_repair_that_restores_the_placeholder_is_applied():
    p = tg.Parameter("Q: {{ question }}\nA:", name="tpl")
    p.add_feedback("Ask for step-by-step reasoning.")
    llm = MockLLM(["<new_value>Think step by step. {{ answer }}</new_value>",
                   "<new_value>Q: {{ question }}\nThink step by step.\nA:</new_value>"])
    TGD([p], llm).step()
    assert p.value == "Q: {{ question }}\nThink step by step.\nA:"
    assert "not provided" in llm.requests[1].messages[-1]["content"]  # the added field


def test_history_shows_earlier_values_and_scores():
    p = tg.Parameter("first draft of the prompt", name="sys")
    llm = MockLLM(["<new_value>second draft of the prompt</new_value>",
                   "<new_value>third draft</new_value>"])
    opt = TGD([p], llm, history=3)
    opt.record_score(0.25, "half of the answers were wrong")
    p.add_feedback("answers lack units")
    opt.step()
    opt.record_score(0.75)
    opt.zero_grad()
    p.add_feedback("answers are too long")
    opt.step()
    first, second = user_text(llm.requests[0]), user_text(llm.requests[1])
    assert "0.75" not in first
    hist = second.split("## Earlier values")[1]
    assert "first draft of the prompt" in hist and "score 0.25" in hist
    assert "half of the answers were wrong" in hist
    assert "score 0.75" in hist and "the current value" in hist
    assert "answers lack units" in hist  # the feedback that led to the second draft


def test_history_is_bounded():
    p = tg.Parameter("v0", name="x")
    opt = TGD([p], MockLLM(), history=2)
    for i in range(5):
        p.value = f"v{i}"
        opt.record_score(i / 10)
    assert [e["values"]["x"] for e in opt.history] == ["v3", "v4"]
    p.value = "v4"
    opt.record_score(0.6)  # same values again: averaged, not duplicated
    assert len(opt.history) == 2 and opt.history[-1]["score"] == pytest.approx(0.5)


def test_gate_skips_the_call_when_all_feedback_says_no_change():
    p = tg.Parameter("Answer the question.", name="sys")
    p.add_feedback("No change needed.", source="a")
    p.add_feedback("Correct: expected '4' and got it.", source="b")
    p.add_feedback(tg.Feedback("Looks fine to me overall", source="c", context={"success": True}))
    llm = MockLLM(renamer)
    result = TGD([p], llm, gate=True).step()
    assert llm.calls == 0 and result.calls == 0
    assert result.events[0]["event"] == "gated" and result.unchanged == ["sys"]

    p.add_feedback("Wrong (score 0.00): expected '5', got '4'.", source="d")
    result = TGD([p], llm, gate=True).step()
    assert llm.calls == 1 and result.updated == {"sys": "sys improved"}


def test_without_gate_positive_feedback_still_calls():
    p = tg.Parameter("Answer.", name="sys")
    p.add_feedback("No change needed.")
    llm = MockLLM(["<new_value>Answer.</new_value>"])
    result = TGD([p], llm).step()
    assert llm.calls == 1
    assert result.events[0]["event"] == "no_change" and result.unchanged == ["sys"]


@pytest.mark.parametrize("condense", ["select", "summary"])
def test_prompt_size_stays_bounded_as_feedback_grows(condense):
    value = "Solve the task carefully."
    budget = 4000

    def reply(req: Request) -> str:
        if "You condense feedback" in request_text(req):
            return "- 64 runs: the unit is missing from the answer."
        return "<new_value>Solve the task carefully. Always state the unit.</new_value>"

    sizes = {}
    for n in (4, 64, 640):
        p = tg.Parameter(value, name="sys")
        for i in range(n):
            p.add_feedback(tg.Feedback(
                f"Example {i}: the answer {i * 7} lacks its unit; expected '{i * 7} km'. " * 4,
                source=f"loss{i}", context={"output": f"{i * 7}"}))
        llm = MockLLM(reply)
        result = TGD([p], llm, feedback_budget=budget, summary_input_chars=12000,
                     condense=condense).step()
        update = [r for r in llm.requests if "<current_value>" in request_text(r)]
        assert len(update) == 1
        sizes[n] = len(request_text(update[0]))
        events = {e["event"] for e in result.events}
        if n == 4:
            assert llm.calls == 1 and not events & {"feedback_summarised", "feedback_condensed"}
        elif condense == "select":  # cut without a call: the critiques themselves, counted
            assert llm.calls == 1 and result.calls == 1 and "feedback_condensed" in events
            shown = request_text(update[0])
            assert f"Feedback from {n} runs" in shown and "lacks its unit" in shown
            assert f'times="{n}"' in shown  # every critique says the same: one point
        else:
            assert llm.calls == 2 and result.calls == 2
            assert any(e["event"] == "feedback_summarised" for e in result.events)
            summary_req = next(r for r in llm.requests if r is not update[0])
            assert summary_req.purpose == "optimizer"
            assert len(request_text(summary_req)) < 12000 + 2500
            assert "64 runs: the unit is missing" in request_text(update[0])
        assert p.value.endswith("Always state the unit.")
    assert sizes[64] < budget + 3000
    assert sizes[640] < budget + 3000
    assert abs(sizes[640] - sizes[64]) < 200


def test_engine_errors_propagate_and_nothing_is_applied():
    a = tg.Parameter("alpha", name="a")
    b = tg.Parameter("beta", name="b")
    for p in (a, b):
        p.add_feedback("improve")

    def reply(req: Request) -> str:
        if name_in(req) == "b":
            raise BudgetExceeded("budget of $1.00 exhausted")
        return renamer(req)

    with pytest.raises(BudgetExceeded):
        TGD([a, b], MockLLM(reply), max_concurrency=2).step()
    assert (a.value, b.value) == ("alpha", "beta")


def test_revert_and_to_dict():
    p = tg.Parameter("old", name="sys")
    p.add_feedback("change")
    opt = TGD([p], MockLLM(["<new_value>new</new_value>"]))
    result = opt.step()
    assert isinstance(result, StepResult) and p.value == "new"
    data = json.loads(json.dumps(result.to_dict()))
    assert data["updated"] == {"sys": "new"} and data["previous"] == {"sys": "old"}
    result.revert()
    assert p.value == "old" and result.reverted
    result.revert()
    assert p.value == "old"


def test_number_and_json_parameters():
    t = tg.Parameter(0.2, name="temperature", role="sampling temperature")
    k = tg.Parameter(3, name="k", value_type=int)
    cfg = tg.Parameter({"max_items": 3}, name="cfg", value_type=dict[str, int])
    for p in (t, k, cfg):
        p.add_feedback("too conservative")
    replies = {
        "name: temperature": "<new_value>0.7</new_value>",
        "name: k": ["<new_value>4.5</new_value>", "<new_value>5</new_value>"],
        "name: cfg": ['<new_value>{"max_items": "many"}</new_value>',
                      '<new_value>```json\n{"max_items": 6}\n```</new_value>'],
    }

    def reply(req: Request) -> str:
        for key, r in replies.items():
            if key in user_text(req):
                return r.pop(0) if isinstance(r, list) else r
        raise AssertionError("unexpected request")

    llm = MockLLM(reply)
    result = TGD([t, k, cfg], llm, max_concurrency=1).step()
    assert t.value == 0.7 and k.value == 5 and isinstance(k.value, int)
    assert cfg.value == {"max_items": 6}
    assert llm.calls == 5 and result.calls == 5
    assert "Only the number goes between the tags." in user_text(llm.requests[0])


def test_state_dict_round_trip_restores_history():
    p = tg.Parameter("v0", name="sys")
    opt = TGD([p], MockLLM(["<new_value>v1</new_value>"]))
    opt.record_score(0.3, "meh")
    p.add_feedback("fix")
    opt.step()
    state = json.loads(json.dumps(opt.state_dict()))
    llm = MockLLM(["<new_value>v2</new_value>"])
    fresh = TGD([p], llm)
    fresh.load_state_dict(state)
    assert fresh.history == opt.history and fresh.steps == 1
    p.zero_grad()
    p.add_feedback("again")
    fresh.step()
    assert "score 0.3" in user_text(llm.requests[0]) and "v0" in user_text(llm.requests[0])


def test_names_are_unique_and_options_are_checked():
    a, b = tg.Parameter("x", name="prompt"), tg.Parameter("y", name="prompt")
    opt = TGD([a, b, a], MockLLM())
    assert list(opt.names) == ["prompt", "prompt#2"] and len(opt.params) == 2
    with pytest.raises(TypeError, match="feedbak_budget"):
        TGD([a], MockLLM(), feedbak_budget=10)
    with pytest.raises(ValueError):
        TGD([], MockLLM())


def test_propagator_and_context_engine_reach_the_worker_threads():
    a, b = tg.Parameter("x", name="a"), tg.Parameter("y", name="b")
    llm = MockLLM(renamer, latency=0.02)
    opt = TGD([a, b])  # no engine: the backward engine in effect at step() time is used
    assert isinstance(opt.propagator(), TextualPropagator) and opt.needs_backward
    for p in (a, b):
        p.add_feedback("change")
    with tg.backward_llm(llm):
        opt.step()
    assert (a.value, b.value) == ("a improved", "b improved") and llm.max_in_flight == 2


def test_end_to_end_with_textual_backward():
    system = tg.Parameter("Answer.", role="system prompt", name="system")

    def reply(req: Request) -> str:
        text = request_text(req)
        if req.purpose == "forward":
            return "4" if "Give only the number" in text else "There are four fruits."
        if req.purpose == "backward":
            return json.dumps({"system": "Require a bare number as the answer."})
        m = re.search(r"<current_value>\n(.*?)\n</current_value>", text, re.S)
        assert m and "bare number" in text
        return f"<new_value>{m.group(1)} Give only the number.</new_value>"

    llm = MockLLM(reply)
    qa = tg.LLMCall(llm, system=system)
    opt = TGD([system], llm)
    answer = qa("2 apples and 2 pears: how many fruits?")
    loss = tg.MetricLoss(lambda pred, exp: pred.strip() == exp)(answer, "4")
    loss.backward(propagator=opt.propagator())
    assert system.grads and llm.calls_for("backward") == 1
    opt.step()
    assert system.value == "Answer. Give only the number."
    assert qa("2 apples and 2 pears: how many fruits?").value == "4"


def test_sample_id_reaches_every_request_of_the_step():
    p = tg.Parameter("Be helpful.", name="sys")
    for i in range(30):
        p.add_feedback(f"Problem number {i}: " + "the answer is too long and rambles. " * 8)
    llm = MockLLM(["- too long", "no tags", "<new_value>Be brief.</new_value>"])
    result = TGD([p], llm, feedback_budget=2000, condense="summary").step(sample_id="beam-1")
    assert result.calls == 3 and p.value == "Be brief."
    assert [r.sample_id for r in llm.requests] == ["beam-1"] * 3


def test_a_contextvar_set_by_the_caller_is_visible_inside_the_update_workers():
    import contextvars
    import threading

    setting: contextvars.ContextVar[str] = contextvars.ContextVar("opt_setting", default="unset")
    seen: list[tuple[str, str]] = []

    def reply(req: Request) -> str:
        seen.append((setting.get(), threading.current_thread().name))
        return renamer(req)

    params = [tg.Parameter(f"value {i}", name=f"p{i}") for i in range(3)]
    for p in params:
        p.add_feedback(tg.Feedback("make it better", source="loss"))
    opt = TGD(params, MockLLM(reply, latency=0.02))
    token = setting.set("set by the caller")
    try:
        opt.step()
    finally:
        setting.reset(token)
    assert len(seen) == 3
    assert all(name.startswith("tg-optim") for _, name in seen)
    assert [v for v, _ in seen] == ["set by the caller"] * 3
