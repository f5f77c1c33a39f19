"""TraceOptimizer: all parameters rewritten in one call from the execution trace (OptoPrime line).

Backward makes no LLM call here: the trace propagator leaves on every parameter the
subgraph between it and the loss. This optimizer merges those subgraphs and shows them to
the model as a short code-like listing (``out = op(arg=name)`` plus the values each step
produced), with the parameters in full and the result's feedback. Seeing how values flow
lets the model fix the parameter that caused a problem rather than the one nearest to it,
and one call per step keeps cost flat in the number of parameters.

The listing is bounded: when it would exceed ``max_listing_chars`` the steps farthest
(by graph distance) from both the parameters and the result are cut, and a line says so.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any, Unpack

from pydantic import BaseModel, ValidationError

from .. import prompts
from ..backward import TracePropagator
from ..core.condense import condense_feedback
from ..core.keys import match_keys
from ..core.shorten import shorten
from ..core.variable import Parameter, Variable, name_by_position, topo_order
from ..llm.base import Completion, Request, StructuredOutputError
from ..llm.structured import complete_json, extract_json
from ..ops.loss import AGGREGATE_ITEM_LIMIT
from ..prompts.kinds import describe_kind
from .base import (
    FeedbackItem,
    Optimizer,
    OptimizerOptions,
    StepResult,
    check_condense,
    collect_feedback,
    render_feedback,
    repair_request,
    same_value,
    summarise_feedback,
    value_text,
)
from .history import render_history

_FORMAT = ('one JSON object {"reasoning": "...", "values": {"<parameter name>": <corrected value>}} '
           "holding corrected values for the rejected parameters only")
_REASONING_KEYS = {"reasoning", "reason", "explanation", "thoughts", "analysis"}


class TraceReply(BaseModel):
    """The reply contract: new values by parameter name, and why."""

    reasoning: str = ""
    values: dict[str, Any]


def _reply_from_json(data: Any) -> TraceReply:
    """Accept the agreed shape, or a flat mapping of names to values (a common slip)."""
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object {"reasoning": "...", "values": {...}}')
    if "values" in data:
        body = {"reasoning": data.get("reasoning", ""), "values": data["values"]}
    else:
        body = {
            "reasoning": next((data[k] for k in data if str(k).lower() in _REASONING_KEYS), ""),
            "values": {k: v for k, v in data.items() if str(k).lower() not in _REASONING_KEYS},
        }
    if not isinstance(body["reasoning"], str):
        body["reasoning"] = json.dumps(body["reasoning"])
    try:
        return TraceReply.model_validate(body)
    except ValidationError as e:
        raise ValueError('"values" must be an object mapping parameter names to new values: '
                         + "; ".join(str(err.get("msg")) for err in e.errors()[:3])) from None


# -- the listing -------------------------------------------------------------------------


class _Listing:
    """Renders a merged trace subgraph as code-like lines, within a character budget."""

    def __init__(self, nodes: dict[int, Variable], param_names: dict[int, str], value_limit: int):
        self.nodes = nodes
        self.order = topo_order(nodes.values(), within=nodes)
        self.param_names = param_names
        self.value_limit = value_limit
        self._names: dict[int, str] = dict(param_names)
        self._used = set(param_names.values())
        self._described: set[tuple[str, str]] = set()

    def name(self, v: Variable) -> str:
        n = self._names.get(v.id)
        if n is None:
            n = v.name
            k = 1
            while n in self._used:  # numbered in listing order: an id differs run to run
                k += 1
                n = f"{v.name}_{k}"
            self._used.add(n)
            self._names[v.id] = n
        return n

    def short(self, value: Any) -> str:
        text = shorten(value, self.value_limit)
        return json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text

    def block(self, v: Variable, declared: set[int]) -> list[str]:
        op = v.op
        assert op is not None
        lines = []
        for inp in op.inputs.values():
            if inp.id in self.nodes or inp.id in declared:
                continue
            declared.add(inp.id)
            role = f"  # {inp.role}" if inp.role else ""
            lines.append(f"{self.name(inp)} = {self.short(inp.value)}{role}")
        args = ", ".join(f"{k}={self.name(x)}" for k, x in op.inputs.items())
        note = getattr(op, "listing_note", "")  # e.g. a tool call's arguments
        args = f"{args}, {note}" if note else args
        desc = " ".join(op.description.split()) if op.description else ""
        if desc and (op.name, desc) in self._described:
            desc = ""  # a batch repeats the same op: describe it once
        elif desc:
            self._described.add((op.name, desc))
        lines.append(f"{self.name(v)} = {op.name}({args})" + (f"  # {shorten(desc, 160)}" if desc else ""))
        if v.error:
            lines.append(f"    -> raised: {self.short(v.error)}")
        else:
            lines.append(f"    -> {self.short(v.value)}")
        return lines

    def distances(self) -> dict[int, int]:
        """Undirected distance of each node to the nearest parameter or result node."""
        children: dict[int, list[int]] = {}
        for v in self.order:
            for p in v.parents:
                if p.id in self.nodes:
                    children.setdefault(p.id, []).append(v.id)
        sources = [v.id for v in self.order
                   if v.id in self.param_names or not children.get(v.id)]
        dist = dict.fromkeys(sources, 0)
        queue = deque(sources)
        while queue:
            i = queue.popleft()
            v = self.nodes[i]
            for j in [*(p.id for p in v.parents if p.id in self.nodes), *children.get(i, [])]:
                if j not in dist:
                    dist[j] = dist[i] + 1
                    queue.append(j)
        return dist

    def render(self, max_chars: int) -> tuple[str, int]:
        steps = [v for v in self.order if v.op is not None]
        keep = {v.id for v in steps}
        sizes = {v.id: sum(len(x) + 1 for x in self.block(v, set())) for v in steps}
        self._described.clear()
        if sum(sizes.values()) > max_chars:
            dist = self.distances()
            index = {v.id: i for i, v in enumerate(self.order)}
            keep, used = set(), 0
            for v in sorted(steps, key=lambda v: (dist.get(v.id, 1 << 30), -index[v.id])):
                if used + sizes[v.id] <= max_chars:
                    keep.add(v.id)
                    used += sizes[v.id]
        cut = len(steps) - len(keep)
        lines: list[str] = []
        if cut:
            lines.append(f"# {cut} of {len(steps)} steps were cut from this listing to keep it short "
                         "(kept: the steps nearest the parameters and the result)")
        declared: set[int] = set()
        gap = 0
        for v in steps:
            if v.id not in keep:
                gap += 1
                continue
            if gap:
                lines.append(f"# ... {gap} step(s) cut here ...")
                gap = 0
            lines.extend(self.block(v, declared))
        if gap:
            lines.append(f"# ... {gap} step(s) cut here ...")
        return "\n".join(lines), cut


def trace_listing(root: Variable, *, max_chars: int = 12000, value_limit: int = 400) -> str:
    """The code-like listing of ``root``'s graph that the trace optimizer is shown:
    one ``out = op(arg=...)`` line per step with its value (``-> raised:`` for errors).
    Handy to read what an agent did: every model turn, tool call and result."""
    name_by_position(root)  # agent1, agent2, ...: the same names in every run
    steps = {v.id: v for v in topo_order(root) if v.op is not None}  # leaves: declared
    return _Listing(steps, {}, value_limit).render(max_chars)[0]


# -- the optimizer ------------------------------------------------------------------------


class TraceOptimizer(Optimizer):
    """One call per step rewrites every parameter that has feedback."""

    def __init__(
        self,
        parameters: Iterable[Parameter] | Any,
        engine: Any = None,
        *,
        max_listing_chars: int = 12000,
        value_limit: int = 300,
        feedback_budget: int = 6000,
        summary_input_chars: int = 24000,
        history_value_limit: int = 800,
        prompt: str = "trace_update",
        summary_prompt: str = "feedback_summary",
        condense: str = "select",
        **common: Unpack[OptimizerOptions],
    ) -> None:
        super().__init__(parameters, engine, **common)
        self.condense = check_condense(condense)
        self.max_listing_chars = max_listing_chars
        self.value_limit = value_limit
        self.feedback_budget = feedback_budget
        self.summary_input_chars = summary_input_chars
        self.history_value_limit = history_value_limit
        self.prompt = prompt
        self.summary_prompt = summary_prompt

    def propagator(self) -> Any:
        return TracePropagator()

    def _step_calls(self, n_params: int, n_failures: int, feedback_chars: int,
                    worst: bool) -> dict[str, int]:
        # one update for all parameters, after one summary when condense="summary" and the
        # feedback is over budget (it is the aggregate's text: each example cut to
        # AGGREGATE_ITEM_LIMIT); at worst a JSON repair and then a constraint repair
        shown = n_failures * (min(feedback_chars, AGGREGATE_ITEM_LIMIT) + len("[0] \n"))
        summary = 1 if shown > self.feedback_budget and self.condense == "summary" else 0
        return {"summary": summary, "optimizer": 1, "repair": 2 if worst else 0}

    def step(self, sample_id: str | None = None) -> StepResult:
        self._sample = sample_id
        result = self._new_result()
        offered = {n: p for n, p in self.names.items() if p.requires_grad and p.grads}
        if not offered:
            self._apply(result, {}, {})
            return result
        engine = self.engine
        feedback, reason = self._feedback(engine, result, offered)
        trace_text = self._trace_text(result, offered)
        request = Request(
            messages=[
                {"role": "system", "content": prompts.load(self.prompt)},
                {"role": "user", "content": self._render(offered, trace_text, feedback)},
            ],
            purpose="optimizer",
            sample_id=self._sample,
        )
        answer = self._ask(engine, result, offered, request)
        if answer is None:
            self._apply(result, {}, {})
            return result
        reply, completion = answer
        proposals, problems = self._collect(result, reply.values, offered)
        if problems:
            proposals.update(self._repair(engine, result, offered, request, completion.text,
                                          problems))
        for n in offered:
            if n in proposals and same_value(proposals[n], offered[n].value):
                self._event(result, n, "no_change", "the optimizer returned the current value")
        why = f"feedback: {shorten(reason, 1000)}"
        if reply.reasoning:
            why += f"\nreasoning: {shorten(reply.reasoning, 400)}"
        self._apply(result, proposals, dict.fromkeys(proposals, why))
        return result

    def _events(self, result: StepResult, names: Iterable[str], event: str, detail: str) -> None:
        for n in names:
            self._event(result, n, event, detail)

    # -- the parts of a step ---------------------------------------------------------
    def _feedback_items(self, offered: dict[str, Parameter]) -> list[FeedbackItem]:
        """One list for all parameters, each item saying whom it concerns (the same loss
        feedback sits on every parameter: count it once, not once per parameter)."""
        items = collect_feedback(g for p in offered.values() for g in p.grads)
        owners: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        for n, p in offered.items():
            for it in collect_feedback(p.grads):
                key = " ".join(it.text.split())
                owners.setdefault(key, []).append(n)
                counts[key] = max(counts.get(key, 0), it.count)
        for it in items:
            key = " ".join(it.text.split())
            it.count = counts.get(key, 1)
            who = owners.get(key, [])
            it.context = {"concerns": ", ".join(who)} if len(who) < len(offered) else {}
        return items

    def _feedback(self, engine: Any, result: StepResult,
                  offered: dict[str, Parameter]) -> tuple[str, str]:
        """The feedback section, cut to fit when over budget (see TGD's ``condense``), and
        the text that is recorded as the reason for the new values."""
        items = self._feedback_items(offered)
        feedback = render_feedback(items, context_limit=self.value_limit)
        if len(feedback) <= self.feedback_budget:
            return feedback, "\n".join(it.text for it in items)
        if self.condense == "select":
            cut = condense_feedback(items, limit=self.feedback_budget,
                                    context_limit=self.value_limit)
            self._events(result, offered, "feedback_condensed",
                         f"{len(items)} items ({len(feedback)} chars) {cut.detail}")
            return cut.text, "\n".join(it.text for it in cut.shown)
        summary, calls, events = summarise_feedback(
            engine, items, about="the result of the program traced below",
            limit=self.feedback_budget, input_limit=self.summary_input_chars,
            prompt=self.summary_prompt, sample_id=self._sample,
        )
        result.calls += calls
        for ev in events:
            self._events(result, offered, ev["event"], ev["detail"])
        self._events(result, offered, "feedback_summarised",
                     f"{len(items)} items ({len(feedback)} chars) condensed to {len(summary)} chars")
        return f"(Condensed from {len(items)} feedback items.)\n{summary}", summary

    def _trace_text(self, result: StepResult, offered: dict[str, Parameter]) -> str:
        """The merged subgraphs of the offered parameters as a bounded listing."""
        nodes: dict[int, Variable] = {}
        for p in offered.values():
            for g in p.grads:
                for v in g.trace or ():
                    nodes[v.id] = v
        listing = _Listing(nodes, {p.id: n for n, p in offered.items()}, self.value_limit)
        trace_text, cut = listing.render(self.max_listing_chars)
        if cut:
            self._events(result, offered, "trace_cut", f"{cut} steps cut from the listing")
        return trace_text

    def _ask(self, engine: Any, result: StepResult, offered: dict[str, Parameter],
             request: Request) -> tuple[TraceReply, Completion] | None:
        """The reply as agreed JSON (repaired once if needed), or None when unusable."""
        try:
            reply, completion, calls = complete_json(engine, request, _reply_from_json)
        except StructuredOutputError as e:
            result.calls += 2
            self._events(result, offered, "invalid_reply",
                         f"{str(e)[:300]} (kept the previous value)")
            return None
        result.calls += calls
        if calls > 1:
            self._events(result, offered, "repair", "the first reply was not the agreed JSON")
        return reply, completion

    def _repair(self, engine: Any, result: StepResult, offered: dict[str, Parameter],
                request: Request, reply_text: str, problems: dict[str, str]) -> dict[str, Any]:
        """One more call for the values that broke their constraints; what it fixed."""
        for n, why in problems.items():
            self._event(result, n, "repair", f"constraint_violation: {why}")
        listing_problems = "\n".join(f"- {n}: {why}" for n, why in problems.items())
        fixed_req = repair_request(
            request, reply_text,
            f"these values break their constraints and were not applied:\n{listing_problems}",
            _FORMAT,
        )
        text = engine.complete(fixed_req).text or ""
        result.calls += 1
        try:
            second = _reply_from_json(extract_json(text))
            retry, still = self._collect(result, second.values, {n: offered[n] for n in problems})
        except ValueError as e:
            retry, still = {}, {n: f"the repair reply was unusable: {e}" for n in problems}
        for n in problems:
            if n not in retry:
                why = still.get(n) or "the repair reply gave no value for it"
                self._event(result, n, "constraint_violation",
                            f"{why} (after one repair; kept the previous value)")
        return retry

    def _collect(self, result: StepResult, values: dict[str, Any],
                 offered: dict[str, Parameter]) -> tuple[dict[str, Any], dict[str, str]]:
        matched, rejected = match_keys(values, offered)
        for key, why in rejected:
            self._event(result, key, "unknown_key", f"reply key {key!r} not applied: {why}")
        proposals: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for key, name in matched.items():
            if key != name:
                self._event(result, name, "alias_key", f"reply key {key!r} read as {name!r}")
            value, errs = self.check(offered[name], values[key])
            if errs:
                problems[name] = "; ".join(errs)
            else:
                proposals[name] = value
        return proposals, problems

    # -- the request -----------------------------------------------------------------
    def _render(self, offered: dict[str, Parameter], trace_text: str, feedback: str) -> str:
        params = []
        for n, p in offered.items():
            cons = "\n".join(f"- {c}" for c in self.constraint_lines(p))
            params.append(
                f"### {n}\nrole: {p.role or 'not described'}\n"
                f"kind: {describe_kind(p.value_kind)}\n"
                f"constraints:\n{cons}\nvalue:\n<value>\n{value_text(p.value)}\n</value>"
            )
        parts = [
            *self.task_section(),
            "## How the program ran\n```\n" + (trace_text or "# (no trace recorded)") + "\n```",
            "## Parameters you may change\n" + "\n\n".join(params),
            f"## Feedback on the result\n{feedback}",
        ]
        hist = render_history(self.history, offered, size=self.history_size,
                              value_limit=self.history_value_limit)
        if hist:
            parts.append(hist)
        parts.append('## Your reply\nOne JSON object: {"reasoning": "...", "values": {...}} with '
                     "the parameters you change, by their exact names: "
                     + ", ".join(offered) + ".")
        return "\n\n".join(parts)


__all__ = ["TraceOptimizer", "TraceReply", "match_keys"]
