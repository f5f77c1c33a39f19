"""TraceOptimizer: one call for all parameters, built from the recorded trace."""

from __future__ import annotations

import json
import re

import tracegrad as tg
from tracegrad.backward import TracePropagator
from tracegrad.llm.base import Request
from tracegrad.optim import TraceOptimizer
from tracegrad.optim.trace import match_keys
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

NEW_POST = '''def post(text: str, factor: float, cfg: dict) -> float:
    """Read the last number of the answer and scale it."""
    import re
    nums = re.findall(r"-?\\d+(?:\\.\\d+)?", text)
    return round(float(nums[-1]) * factor, cfg["round"])
'''


def build(optimizer_reply):
    """A pipeline with one parameter of each kind, run once and back-propagated."""
    system = tg.Parameter("Be brief.", role="system prompt", name="qa.system")
    tpl = tg.Parameter("Question: {{ q }}", role="question template", name="qa.template")
    factor = tg.Parameter(1.0, role="scale applied to the answer", name="factor")
    cfg = tg.Parameter({"round": 0}, role="post-processing settings", name="cfg")

    @tg.op(trainable=True)
    def post(text: str, factor: float, cfg: dict) -> float:
        """Read the last number of the answer and scale it."""
        return round(float(text.split()[-1]) * factor, cfg["round"])

    def reply(req: Request) -> str:
        if req.purpose == "forward":
            return "It is 3"
        return optimizer_reply(req) if callable(optimizer_reply) else optimizer_reply.pop(0)

    llm = MockLLM(reply)
    params = [system, tpl, factor, cfg, post.code]
    opt = TraceOptimizer(params, llm)
    prompt = tg.format(tpl, q="How many km from A to B?")
    answer = tg.LLMCall(llm, system=system)(prompt)
    out = post(answer, factor, cfg)
    loss = tg.MetricLoss(lambda p, e: p == e)(out, 4.5)
    result = loss.backward(propagator=opt.propagator())
    assert result.calls == 0
    llm.reset()
    return opt, llm, params, post


def test_one_call_for_five_parameters_unknown_key_reported_alias_applied():
    reply = {
        "reasoning": "The answer must be scaled by 1.5 and keep one decimal.",
        "values": {
            "SYSTEM": "Answer with the number only.",          # alias of qa.system
            "qa.template": "Question: {{ q }}\nGive the distance in km.",
            "factor": 1.5,
            "cfg": {"round": 1},
            "post": NEW_POST,                                 # alias of post.__code__
            "temperature": 0.1,                               # not a parameter
        },
    }
    opt, llm, (system, tpl, factor, cfg, code), post = build([json.dumps(reply)])
    result = opt.step()
    assert llm.calls == 1 and result.calls == 1
    assert llm.requests[0].purpose == "optimizer"
    assert system.value == "Answer with the number only."
    assert tpl.value == "Question: {{ q }}\nGive the distance in km."
    assert factor.value == 1.5 and cfg.value == {"round": 1}
    assert code.value == NEW_POST
    assert set(result.updated) == {"qa.system", "qa.template", "factor", "cfg", "post.__code__"}
    unknown = [e for e in result.events if e["event"] == "unknown_key"]
    assert len(unknown) == 1 and unknown[0]["param"] == "temperature"
    assert not hasattr(opt, "temperature") and "temperature" not in result.updated
    aliases = {e["param"] for e in result.events if e["event"] == "alias_key"}
    assert aliases == {"qa.system", "post.__code__"}
    # the rewritten function now runs in the sandbox and uses the new values
    assert post("It is 3", factor, cfg).value == 4.5


def test_request_shows_the_trace_parameters_and_feedback():
    opt, llm, params, _ = build(['{"values": {}}'])
    result = opt.step()
    text = request_text(llm.requests[0])
    listing = text.split("## How the program ran")[1].split("## Parameters")[0]
    assert re.search(r"= format\(template=qa\.template, q=\w+\)", listing)
    assert re.search(r"= llm_call\(system=qa\.system, input=\w+\)", listing)
    assert re.search(r"= post\(text=\w+, factor=factor, cfg=cfg, __code__=post\.__code__\)", listing)
    assert '-> "It is 3"' in listing and '"How many km from A to B?"' in listing
    params_part = text.split("## Parameters you may change")[1]
    for name in ("### qa.system", "### qa.template", "### factor", "### cfg", "### post.__code__"):
        assert name in params_part
    assert "return round(float(text.split()[-1]) * factor" in params_part
    assert "{{ q }}" in params_part and "may import only" in params_part.lower()
    feedback = text.split("## Feedback on the result")[1]
    assert "expected '4.5', got '3.0'" in feedback
    assert 'times="' not in feedback  # the same loss feedback is not counted once per parameter
    assert result.updated == {} and len(result.unchanged) == 5


def test_constraint_violation_gets_one_repair_then_is_kept_with_an_event():
    bad = {"values": {"qa.template": "Question: please answer", "factor": 2}}
    still_bad = {"values": {"qa.template": "Answer the question."}}
    opt, llm, (system, tpl, factor, *_), _ = build([json.dumps(bad), json.dumps(still_bad)])
    result = opt.step()
    assert llm.calls == 2 and result.calls == 2
    assert "{{ q }}" in llm.requests[1].messages[-1]["content"]
    assert tpl.value == "Question: {{ q }}" and factor.value == 2
    final = [e for e in result.events if e["event"] == "constraint_violation"]
    assert len(final) == 1 and final[0]["param"] == "qa.template"
    assert tpl.events and tpl.events[-1]["event"] == "constraint_violation"


def test_constraint_repair_that_fixes_the_value_is_applied():
    bad = {"values": {"post.__code__": "import os\n" + NEW_POST}}
    good = {"values": {"post.__code__": NEW_POST}}
    opt, llm, params, _ = build([json.dumps(bad), json.dumps(good)])
    result = opt.step()
    assert "os" in llm.requests[1].messages[-1]["content"]
    assert params[4].value == NEW_POST and result.calls == 2


def test_unparseable_reply_twice_keeps_everything():
    opt, llm, params, _ = build(["I would change the system prompt.", "{not json"])
    result = opt.step()
    assert llm.calls == 2 and result.updated == {}
    assert {e["event"] for e in result.events} == {"invalid_reply"}
    assert len(result.events) == 5


def test_flat_mapping_reply_is_accepted():
    opt, llm, (system, *_), _ = build(['```json\n{"reasoning": "x", "qa.system": "Be exact."}\n```'])
    opt.step()
    assert system.value == "Be exact."


def test_history_in_the_next_request():
    replies = [json.dumps({"values": {"qa.system": "Answer with a number."}}),
               json.dumps({"values": {}})]
    opt, llm, (system, *_), _ = build(replies)
    opt.record_score(0.0, "all wrong")
    opt.step()
    opt.record_score(0.5)
    for p in opt.params:
        p.zero_grad()
        p.add_feedback("still wrong")
    opt.step()
    hist = request_text(llm.requests[1]).split("## Earlier values")[1]
    assert "score 0" in hist and "Be brief." in hist and "all wrong" in hist
    assert "score 0.5" in hist and "qa.system: the current value" in hist


def test_long_trace_is_cut_by_distance_and_says_so():
    p = tg.Parameter("seed text", name="seed")

    @tg.op
    def stage(x: str) -> str:
        return x + " more"

    v = tg.format("{{ s }} " + "padding " * 40, s=p)
    for _ in range(60):
        v = stage(v)
    loss = tg.MetricLoss(lambda a, b: 0.0)(v, "x")
    opt = TraceOptimizer([p], MockLLM(['{"values": {}}']), max_listing_chars=3000, value_limit=200)
    loss.backward(propagator=TracePropagator())
    result = opt.step()
    text = request_text(opt.engine.requests[0])
    listing = text.split("```")[1]
    assert len(listing) <= 3000 + 400
    m = re.search(r"# (\d+) of 62 steps were cut", listing)
    assert m and int(m.group(1)) > 30
    assert "step(s) cut here" in listing
    assert "format(s=seed)" in listing          # nearest the parameter
    assert "metric:<lambda>(" in listing         # the result
    assert any(e["event"] == "trace_cut" for e in result.events)


def test_feedback_without_trace_still_works():
    p = tg.Parameter("Be brief.", name="sys")
    p.add_feedback("Mention the unit.")  # e.g. from a textual propagator: no trace attached
    llm = MockLLM(['{"values": {"sys": "Be brief; give units."}}'])
    TraceOptimizer([p], llm).step()
    assert p.value == "Be brief; give units."
    assert "(no trace recorded)" in request_text(llm.requests[0])


def test_match_keys_is_forgiving_about_form_and_strict_about_identity():
    names = ["qa.system", "rag.system", "qa.template", "post.__code__", "prompt#2", "prompt"]
    matched, rejected = match_keys(
        ["`qa.system`", "system", "TEMPLATE", "post", "prompt", "Prompt#2", "colour"], names
    )
    assert matched == {"`qa.system`": "qa.system", "TEMPLATE": "qa.template",
                       "post": "post.__code__", "prompt": "prompt", "Prompt#2": "prompt#2"}
    why = dict(rejected)
    assert "ambiguous" in why["system"] and "no parameter" in why["colour"]


def test_the_plain_pytorch_form_sends_a_trace_and_makes_no_backward_call():
    """``loss.backward(); opt.step()`` with no propagator named: the trace optimizer's own."""
    system = tg.Parameter("Be brief.", role="system prompt", name="qa.system")
    reply = '{"reasoning": "state the unit", "values": {"qa.system": "Answer in km."}}'
    llm = MockLLM(lambda r: "It is 3" if r.purpose == "forward" else reply)
    opt = TraceOptimizer([system], llm)
    answer = tg.LLMCall(llm, system=system)("How far is it?")
    loss = tg.MetricLoss(lambda p, e: p == e)(answer, "3 km")
    result = loss.backward()
    assert result.calls == 0 and llm.calls_for("backward") == 0
    opt.step()
    update = request_text(next(r for r in llm.requests if r.purpose == "optimizer"))
    assert "(no trace recorded)" not in update and "It is 3" in update
    assert system.value == "Answer in km."


def test_parameters_of_optimizers_that_disagree_get_textual_feedback_with_a_warning():
    import pytest

    from tracegrad.backward import TextualPropagator, wanted_propagator
    from tracegrad.optim import TGD
    a, b = tg.Parameter("A", name="a"), tg.Parameter("B", name="b")
    llm = MockLLM("ok")
    _keep = (TraceOptimizer([a], llm), TGD([b], llm))
    out = tg.LLMCall(llm, system=a)(tg.format("{{ x }}", x=b))
    with pytest.warns(UserWarning, match="different propagators"):
        assert isinstance(wanted_propagator(out), TextualPropagator)
    del _keep
    assert isinstance(wanted_propagator(out), TextualPropagator)  # no optimizer alive
