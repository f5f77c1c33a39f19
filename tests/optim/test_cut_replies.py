"""Issue 12 s6: a meta reply cut at the token limit is asked again, never applied as is."""

from __future__ import annotations

import pytest

import tracegrad as tg
from tracegrad.llm.base import Completion
from tracegrad.optim.base import complete_whole
from tracegrad.testing import MockLLM


class CutFirst:
    """An engine whose first reply is cut at the limit; records the limits it was sent."""

    model = "cut-first"

    def __init__(self, full: str, cuts: int = 1) -> None:
        self.full, self.cuts, self.limits = full, cuts, []

    def complete(self, request):
        self.limits.append(request.params.get("max_tokens"))
        if len(self.limits) <= self.cuts:
            return Completion(self.full[: len(self.full) // 2], finish_reason="length",
                              completion_limit=100)
        return Completion(self.full, finish_reason="stop")


def _request():
    return tg.llm.Request(messages=[{"role": "user", "content": "rewrite"}], purpose="optimizer")


def test_a_cut_reply_is_asked_again_with_twice_the_limit():
    e = CutFirst("<new_value>\nthe whole value\n</new_value>")
    text, calls, events = complete_whole(e, _request())
    assert text.endswith("</new_value>") and calls == 2 and e.limits == [None, 200]
    assert events[0]["event"] == "cut_reply"


def test_cut_twice_gives_nothing_to_apply():
    e = CutFirst("<new_value>\nthe whole value\n</new_value>", cuts=2)
    text, calls, events = complete_whole(e, _request())
    assert text == "" and calls == 2 and len(events) == 2


def test_tgd_never_applies_a_cut_rewrite():
    p = tg.Parameter("Answer briefly.", role="instruction", name="p")
    p.grads.append(tg.Feedback("Say the unit.", source="t"))
    e = CutFirst("<new_value>\nAnswer briefly, with the unit.\n</new_value>")
    opt = tg.TGD([p], engine=e)
    res = opt.step()
    assert p.value == "Answer briefly, with the unit." and res.calls == 2
    assert any(ev["event"] == "cut_reply" for ev in res.events)


def test_a_whole_reply_costs_one_call():
    text, calls, events = complete_whole(MockLLM(["done"]), _request())
    assert (text, calls, events) == ("done", 1, [])


def test_a_cut_merge_is_asked_again_not_repaired():
    """Reflect.merge used to send a cut reply to the repair request (and could apply the
    half it got); like every rewrite it is now asked again with twice the limit."""
    p = tg.Parameter("Count every object.", role="instruction", name="p")
    e = CutFirst("<new_value>\nCount every object. A dozen is twelve.\n</new_value>")
    opt = tg.Reflect([p], engine=e)
    value, calls, events = opt.merge(p, "Count every object.", "A dozen is twelve.",
                                     "totals", "dozens")
    assert value == "Count every object. A dozen is twelve."
    assert calls == 2 and e.limits == [None, 200]
    assert events[0]["event"] == "cut_reply"


def test_a_merge_cut_twice_is_not_applied():
    p = tg.Parameter("Count every object.", role="instruction", name="p")
    e = CutFirst("<new_value>\nCount every object. A dozen is twelve.\n</new_value>", cuts=2)
    value, calls, events = tg.Reflect([p], engine=e).merge(p, "a", "b", "x", "y")
    assert value is None and calls == 2 and len(events) == 2


def test_tgd_cut_twice_sends_no_repair_and_says_why():
    """A reply cut twice used to go to the repair request as an empty reply: one call paid
    for nothing, and the step read 'missing tags' instead of why."""
    p = tg.Parameter("Answer briefly.", role="instruction", name="p")
    p.grads.append(tg.Feedback("Say the unit.", source="t"))
    e = CutFirst("<new_value>\nAnswer briefly, with the unit.\n</new_value>", cuts=5)
    with pytest.warns(RuntimeWarning, match="cut_twice"):
        res = tg.TGD([p], engine=e).step()
    assert p.value == "Answer briefly." and res.calls == 2 and len(e.limits) == 2
    assert [ev["event"] for ev in res.events][-1] == "cut_twice"
    assert not any(ev["event"] in ("repair", "missing_tags") for ev in res.events)


def test_opro_cut_twice_sends_no_repair():
    p = tg.Parameter("Answer briefly.", role="instruction", name="p")
    e = CutFirst('<value name="p">\nAnswer with the unit.\n</value>', cuts=5)
    opt = tg.OPRO([p], engine=e)
    opt.record_score(0.5)
    with pytest.warns(RuntimeWarning, match="cut_twice"):
        res = opt.step()
    assert p.value == "Answer briefly." and res.calls == 2 and len(e.limits) == 2
    assert not any(ev["event"] == "repair" for ev in res.events)
