"""Issue 14 s4: a thrown-away proposal is reported as `rejected`, with its reason and text,
never as "the optimizer proposed no change"; the API warns instead of a silent no-op."""

from __future__ import annotations

import warnings

import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM
from tracegrad.train import optimize

from .sim_task import QA, backward_reply, forward_llm, write_data


def _empty_rewrites() -> MockLLM:
    def reply(request):
        if request.purpose == "backward":
            return backward_reply(request)
        return "I would change it.\n<new_value>\n\n</new_value>"

    return MockLLM(reply, model="mock-optimizer")


def test_a_rejected_proposal_is_recorded_as_rejected_with_its_reason(tmp_path):
    train, val = write_data(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = optimize(QA(forward_llm()), train, val, metric="exact_match", steps=2,
                       batch_size=4, optimizer_engine=_empty_rewrites(), run_dir=tmp_path / "r",
                       progress=False)
    rec = res.history[0]
    assert rec["result"] == "rejected", rec["reason"]
    assert "empty" in rec["reason"] and "kept the previous value" in rec["reason"]
    assert "proposed no change" not in rec["reason"]
    ev = next(e for e in rec["events"] if e["event"] == "empty_value")
    assert "<new_value>" in ev["text"]  # the rejected reply itself, for the report
    saved = (tmp_path / "r" / "history.jsonl").read_text()
    assert '"result": "rejected"' in saved


def test_an_unusable_reply_warns_once_in_the_api():
    p = tg.Parameter("Answer.", role="instruction", name="p")
    opt = tg.TGD([p], engine=MockLLM(["no tags here"] * 10))
    for _ in range(2):
        p.grads.append(tg.Feedback("Be more specific.", source="test"))
    with pytest.warns(RuntimeWarning, match="changed nothing: the proposal was rejected"):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.grads.append(tg.Feedback("Still vague.", source="test"))
        opt.step()  # the second unusable step stays quiet: once is enough


def test_step_without_backward_warns():
    p = tg.Parameter("Answer.", role="instruction", name="p")
    opt = tg.TGD([p], engine=MockLLM(["<new_value>x</new_value>"]))
    with pytest.warns(RuntimeWarning, match="call loss.backward"):
        res = opt.step()
    assert not res.updated
