"""OPRO: optimization by prompting -- new values from a scoreboard of old ones.

No backward pass and no graph: the request lists earlier values with their scores,
sorted so the best come last (models weight what they read last), and asks for values
that should beat them. That makes it the optimizer for black-box pipelines and for
parameters whose effect on the score is hard to explain in words, such as numbers.

The scoreboard is filled by ``record_score`` and bounded to the ``history`` best entries,
so the request does not grow with the number of steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Unpack

from .. import prompts
from ..core.keys import match_keys
from ..core.shorten import shorten
from ..core.variable import Parameter
from ..llm.base import Request
from ..prompts.kinds import describe_kind
from .base import (
    Optimizer,
    OptimizerOptions,
    StepResult,
    complete_whole,
    repair_request,
    same_value,
    value_text,
)
from .history import score_text

_BLOCK = re.compile(r"<value\s+name\s*=\s*(?:\"([^\"]*)\"|'([^']*)')\s*>(.*?)</value>", re.S)
_FORMAT = 'one <value name="NAME">...</value> block for each parameter listed in the problem'


def _blocks(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _BLOCK.finditer(text or ""):
        v = m.group(3)
        v = v[1:] if v.startswith("\n") else v
        v = v[:-1] if v.endswith("\n") else v
        out.append((m.group(1) if m.group(1) is not None else m.group(2), v))
    return out


class OPRO(Optimizer):
    """Propose new values for all parameters from the best (values, score) pairs so far."""

    needs_backward = False
    default_history = 20

    def __init__(
        self,
        parameters: Iterable[Parameter] | Any,
        engine: Any = None,
        *,
        task: str = "",
        value_limit: int = 2000,
        prompt: str = "opro_update",
        **common: Unpack[OptimizerOptions],
    ) -> None:
        super().__init__(parameters, engine, **common)
        self.task = task
        self.value_limit = value_limit
        self.prompt = prompt

    def _step_calls(self, n_params: int, n_failures: int, feedback_chars: int,
                    worst: bool) -> dict[str, int]:
        # no backward and no feedback: one proposal, at worst one repair of it
        return {"summary": 0, "optimizer": 1, "repair": 1 if worst else 0}

    def _trim_history(self) -> None:
        """Keep the best entries: the scoreboard is about what worked, not what is recent."""
        if len(self.history) > self.history_size:
            ranked = sorted(self.history, key=lambda e: e["score"], reverse=True)[: self.history_size]
            keep = {id(e) for e in ranked}
            self.history = [e for e in self.history if id(e) in keep]

    def step(self, sample_id: str | None = None) -> StepResult:
        self._sample = sample_id
        result = self._new_result()
        names = {n: p for n, p in self.names.items() if p.requires_grad}
        if not names:
            self._apply(result, {}, {})
            return result
        engine = self.engine
        request = Request(
            messages=[
                {"role": "system", "content": prompts.load(self.prompt)},
                {"role": "user", "content": self._render(names)},
            ],
            purpose="optimizer",
            sample_id=self._sample,
        )
        reply, n, cut = complete_whole(engine, request)
        result.calls += n
        for ev in cut:
            self._event(result, "", ev["event"], ev["detail"])
        if not reply and cut:  # cut twice: nothing whole to parse or repair
            self._apply(result, {}, {})
            return result
        proposals, problems = self._collect(result, reply, names)
        if problems:
            for n, why in problems.items():
                self._event(result, n, "repair", why)
            listing = "\n".join(f"- {n}: {why}" for n, why in problems.items())
            reply2 = engine.complete(repair_request(request, reply, "\n" + listing, _FORMAT)).text or ""
            result.calls += 1
            retry, still = self._collect(result, reply2, {n: names[n] for n in problems})
            proposals.update(retry)
            for n in problems:
                if n not in retry:
                    why = still.get(n, "no value given")
                    kind = "missing_tags" if why.startswith("missing") else (
                        "empty_value" if why.startswith("empty") else "constraint_violation")
                    self._event(result, n, kind, f"{why} (after one repair; kept the previous value)")
        merged = {**self.values(), **proposals}
        for e in self.history:
            if all(same_value(e["values"].get(n), v) for n, v in merged.items()):
                for n in proposals:
                    self._event(result, n, "duplicate",
                                f"the proposal repeats values already scored {e['score']:.4g}")
                break
        self._apply(result, proposals, dict.fromkeys(proposals, "proposed from the scoreboard"))
        return result

    def _collect(self, result: StepResult, reply: str,
                 wanted: dict[str, Parameter]) -> tuple[dict[str, Any], dict[str, str]]:
        found: dict[str, str] = {}
        for key, value in _blocks(reply):
            found[key] = value  # a repeated name: the last block wins
        matched, rejected = match_keys(found, wanted)
        for key, why in rejected:
            self._event(result, key, "unknown_key", f"reply key {key!r} not applied: {why}")
        proposals: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for key, name in matched.items():
            value, errs = self.check(wanted[name], found[key])
            if errs == ["empty value"]:
                problems[name] = "empty value"
            elif errs:
                problems[name] = "constraint violation: " + "; ".join(errs)
            else:
                proposals[name] = value
        for name in wanted:
            if name not in matched.values():
                problems[name] = f'missing: no <value name="{name}"> block'
        return proposals, problems

    def _render(self, names: dict[str, Parameter]) -> str:
        parts = []
        if self.task:
            parts.append(f"## The task\n{self.task}")
        params = []
        for n, p in names.items():
            cons = "\n".join(f"- {c}" for c in self.constraint_lines(p))
            params.append(f"### {n}\nrole: {p.role or 'not described'}\n"
                          f"kind: {describe_kind(p.value_kind)}\n"
                          f"constraints:\n{cons}")
        parts.append("## Parameters\n" + "\n\n".join(params))
        board = sorted(self.history, key=lambda e: e["score"])
        current = self.values()
        rows = []
        for e in board:
            head = f"### {score_text(e)}"
            if all(same_value(e["values"].get(n), current[n]) for n in names):
                head += " (the current values)"
            rows.append(head + "\n" + self._values_block(e["values"], names)
                        + (f"\nevaluation: {shorten(e['feedback'], 300)}" if e.get("feedback") else ""))
        if rows:
            parts.append("## Earlier values and their scores (lowest first, best last)\n"
                         + "\n\n".join(rows))
        scored = any(all(same_value(e["values"].get(n), current[n]) for n in names)
                     for e in board)
        if not scored:
            parts.append("## Current values (not scored yet)\n" + self._values_block(current, names))
        parts.append("## Your reply\nPropose new values that should score higher than all of the "
                     'above. Write one <value name="NAME">...</value> block for each of: '
                     + ", ".join(names) + ".")
        return "\n\n".join(parts)

    def _values_block(self, values: dict[str, Any], names: dict[str, Parameter]) -> str:
        return "\n".join(
            f'<value name="{n}">{shorten(value_text(values.get(n)), self.value_limit)}</value>'
            for n in names
        )


__all__ = ["OPRO"]
