"""TGD: textual gradient descent, one rewrite per parameter (the TextGrad line).

Each parameter that received feedback gets its own update request; requests for
different parameters run concurrently. Three things this does differently from a naive
"here is the feedback, rewrite it" loop, because users of that loop hit each of them:

* The current value is sent in full. A shortened value invites a shortened rewrite,
  which silently deletes the part the model never saw.
* Feedback is bounded: duplicates are merged, and when a batch's feedback is still over
  ``feedback_budget`` it is first condensed by one extra call, so the request size does
  not grow with the batch.
* The request shows earlier values with their scores (``record_score``), so a step does
  not undo what an earlier step got right.

A reply must hold the new value between ``<new_value>`` tags and pass the automatic
constraints; otherwise it is repaired once, then the old value is kept and an event says
why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Unpack

from .. import prompts
from ..core.condense import condense_feedback
from ..core.feedback import render_evidence
from ..core.shorten import shorten
from ..core.variable import Parameter
from ..llm.base import Request
from ..prompts.kinds import describe_kind, reply_reminder
from .base import (
    FeedbackItem,
    Optimizer,
    OptimizerOptions,
    StepResult,
    check_condense,
    collect_feedback,
    complete_whole,
    extract_tag,
    is_positive,
    render_feedback,
    repair_request,
    same_value,
    summarise_feedback,
    value_text,
)
from .history import render_history

TAG = "new_value"
_FORMAT = f"the complete new value between <{TAG}> and </{TAG}>"


@dataclass
class _Rewrite:
    value: Any = None
    accepted: bool = False
    calls: int = 0
    events: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""


class TGD(Optimizer):
    """Textual gradient descent.

    ``gate=True`` skips the call for a parameter whose feedback all says nothing needs
    to change. ``examples`` are shown in every request (shortened to
    ``examples_budget`` in total) to ground the rewrite in the task. Feedback over
    ``feedback_budget`` is cut to fit by ``condense``: ``"select"`` merges and counts
    similar critiques with no call (:mod:`tracegrad.core.condense`), ``"summary"`` asks
    the model for a summary first, one more serial call per step.
    """

    def __init__(
        self,
        parameters: Iterable[Parameter] | Any,
        engine: Any = None,
        *,
        gate: bool = False,
        feedback_budget: int = 6000,
        summary_input_chars: int = 24000,
        context_limit: int = 400,
        history_value_limit: int = 1500,
        examples: Iterable[Any] = (),
        examples_budget: int = 3000,
        prompt: str = "tgd_update",
        summary_prompt: str = "feedback_summary",
        condense: str = "select",
        batch_feedback: bool = False,
        evidence_budget: int = 0,
        **common: Unpack[OptimizerOptions],
    ) -> None:
        super().__init__(parameters, engine, **common)
        self.gate = gate
        self.batch_feedback = batch_feedback
        self.feedback_budget = feedback_budget
        self.summary_input_chars = summary_input_chars
        self.context_limit = context_limit
        self.history_value_limit = history_value_limit
        self.examples = list(examples)
        self.examples_budget = examples_budget
        self.prompt = prompt
        self.summary_prompt = summary_prompt
        self.condense = check_condense(condense)
        self.evidence_budget = evidence_budget

    def propagator(self) -> Any:
        from ..backward import TextualPropagator

        # batch_feedback=True: the LLM calls of one generation that share a prompt get
        # their feedback from one call per chunk, not one per example (see benchmarks/).
        return TextualPropagator(self._engine, max_concurrency=self.max_concurrency,
                                 batch_feedback=self.batch_feedback)

    def _step_calls(self, n_params: int, n_failures: int, feedback_chars: int,
                    worst: bool) -> dict[str, int]:
        # per parameter: with condense="summary", a summary first when its feedback (one
        # backward reply per failed example) is over budget; one update, and at worst one
        # repair of it (_update_one)
        over = n_failures * feedback_chars > self.feedback_budget
        summary = n_params if over and self.condense == "summary" else 0
        return {"summary": summary, "optimizer": n_params, "repair": n_params if worst else 0}

    # -- step ------------------------------------------------------------------------
    def step(self, sample_id: str | None = None) -> StepResult:
        self._sample = sample_id
        result = self._new_result()
        jobs: list[tuple[str, Parameter, list[FeedbackItem]]] = []
        self._warn_if_no_feedback()
        for name, p in self.names.items():
            if not p.requires_grad:
                continue
            items = collect_feedback(p.grads)
            if not items:
                continue
            if self.gate and all(is_positive(it) for it in items):
                self._event(result, name, "gated",
                            f"all {len(items)} feedback item(s) say no change is needed; no call made")
                continue
            jobs.append((name, p, items))
        outcomes = self._run_parallel(self._update_one, self.engine if jobs else None, jobs)
        proposals: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        for (name, _, _), out in zip(jobs, outcomes, strict=True):
            result.calls += out.calls
            for ev in out.events:
                self._event(result, name, ev["event"], ev.get("detail", ""),
                            **{k: v for k, v in ev.items() if k not in ("event", "detail")})
            if out.accepted:
                proposals[name] = out.value
                reasons[name] = out.reason
        self._apply(result, proposals, reasons)
        return result

    def _update_one(self, engine: Any, job: tuple[str, Parameter, list[FeedbackItem]]) -> _Rewrite:
        name, p, items = job
        out = _Rewrite()
        rendered = render_feedback(items, context_limit=self.context_limit)
        runs = sum(it.count for it in items)
        if len(rendered) <= self.feedback_budget:
            feedback_block, out.reason = rendered, "\n".join(it.text for it in items)
        elif self.condense == "select":
            cut = condense_feedback(items, limit=self.feedback_budget,
                                    context_limit=self.context_limit)
            out.events.append({"event": "feedback_condensed",
                               "detail": f"{len(items)} distinct items from {runs} runs "
                                         f"({len(rendered)} chars) {cut.detail}"})
            feedback_block, out.reason = cut.text, "\n".join(it.text for it in cut.shown)
        else:
            feedback_block, out.reason = self._summarised(engine, name, p, items, runs, out)
            out.events.append({
                "event": "feedback_summarised",
                "detail": f"{len(items)} distinct items from {runs} runs ({len(rendered)} chars) "
                          f"condensed to {len(out.reason)} chars",
            })

        request = Request(
            messages=[
                {"role": "system", "content": prompts.load(self.prompt)},
                {"role": "user", "content": self._render(name, p, feedback_block)},
            ],
            purpose="optimizer",
            sample_id=self._sample,
        )
        reply, n, cut = complete_whole(engine, request)
        out.calls += n
        out.events += cut
        if not reply and cut:  # cut twice: nothing whole to parse or repair
            return out
        value, problem = self._parse(p, reply)
        if problem is not None:
            out.events.append({"event": "repair", "detail": f"{problem[0]}: {problem[1]}"})
            reply = engine.complete(repair_request(request, reply, problem[1], _FORMAT)).text or ""
            out.calls += 1
            value, problem = self._parse(p, reply)
            if problem is not None:
                out.events.append({"event": problem[0],
                                   "detail": f"{problem[1]} (after one repair; kept the previous value)",
                                   "text": shorten(reply, 2000)})
                return out
        if same_value(value, p.value):
            out.events.append({"event": "no_change", "detail": "the optimizer returned the current value"})
        out.value, out.accepted = value, True
        return out

    def _summarised(self, engine: Any, name: str, p: Parameter, items: list[FeedbackItem],
                    runs: int, out: _Rewrite) -> tuple[str, str]:
        """``condense="summary"``: the feedback condensed by one call; (block, summary)."""
        summary, calls, events = summarise_feedback(
            engine, items, about=f"{name} ({p.role or p.value_kind})",
            limit=self.feedback_budget, input_limit=self.summary_input_chars,
            prompt=self.summary_prompt, sample_id=self._sample,
        )
        out.calls += calls
        out.events += events
        return (f"(Feedback from {runs} runs, {len(items)} distinct items, condensed into a "
                f"summary because it was too long to show in full.)\n{summary}"), summary

    def _parse(self, p: Parameter, reply: str) -> tuple[Any, tuple[str, str] | None]:
        raw = extract_tag(reply, TAG)
        if raw is None:
            if f"<{TAG}>" in reply:
                return None, ("missing_tags", f"the reply opens <{TAG}> but never closes it with "
                                              f"</{TAG}> (was it cut off?)")
            return None, ("missing_tags", f"the reply has no <{TAG}>...</{TAG}> block")
        value, problems = self.check(p, raw)
        if problems == ["empty value"]:
            return None, ("empty_value", f"the value between <{TAG}> and </{TAG}> is empty")
        if problems:
            return None, ("constraint_violation", "; ".join(problems))
        return value, None

    # -- the request -----------------------------------------------------------------
    def _render(self, name: str, p: Parameter, feedback_block: str) -> str:
        kind = p.value_kind
        parts = [
            *self.task_section(),
            "## The variable\n"
            f"name: {name}\nrole: {p.role or 'not described'}\n"
            f"kind: {describe_kind(kind)}",
            f"## Current value\n<current_value>\n{value_text(p.value)}\n</current_value>",
            f"## Feedback on the current value\n{feedback_block}",
            *self._evidence_section(p),
            "## Constraints (the new value must satisfy every one)\n"
            + "\n".join(f"- {c}" for c in self.constraint_lines(p)),
        ]
        hist = render_history(self.history, {name: p}, size=self.history_size,
                              value_limit=self.history_value_limit, single=True)
        if hist:
            parts.append(hist)
        ex = self._examples_block()
        if ex:
            parts.append(f"## Examples of the task\n{ex}")
        parts.append(f"## Your reply\nWrite {_FORMAT}. {reply_reminder(kind)}".rstrip())
        return "\n\n".join(parts)

    def _evidence_section(self, p: Parameter | None = None) -> list[str]:
        """The step's own examples (inputs, expected, got, why), when the trainer gave them."""
        if not self.evidence or self.evidence_budget <= 0:
            return []
        table = render_evidence(self.evidence, budget=self.evidence_budget,
                                offset=self._evidence_offset(), param=p)
        return [f"## What the examples of this step show\n{table}"]

    def _evidence_offset(self) -> int:
        return 0

    def _examples_block(self) -> str:
        if not self.examples:
            return ""
        share = max(100, self.examples_budget // len(self.examples))
        shown, size = [], 0
        for ex in self.examples:
            text = shorten(value_text(ex), share)
            if shown and size + len(text) > self.examples_budget:
                break
            shown.append(f"<example>\n{text}\n</example>")
            size += len(text)
        return "\n".join(shown)


__all__ = ["TGD"]
