"""``reflect``: a GEPA-class reflective optimizer.

TGD rewrites from a backward model's critique of every failing example. ``reflect``
shows the reflection model the step's examples themselves as well -- input, expected,
got, why -- grouped by problem, with the counts, beside a few that worked -- so it reads
the evidence and not only a retelling of it. The critiques stay by default
(``critique=True``): an example that fails for two reasons scores the same when one is
fixed, and the per-example critique is what names the second one. On
``benchmarks/quality`` (SIMULATED, 30 seeds) dropping them -- the metric's own feedback
passed along the trace with no backward call, ``critique=False``, the optimizer
``reflect-lean`` -- lost 0.06 in counting_hard at 800 metric calls and 0.07 at 400; the
backward calls cost little there, since the evidence table is most of each request
(10 seeds: $0.30 against $0.34 a run in counting_hard, $0.62 against $0.54 in the
pipeline world).

The search around it lives in the trainer (chosen by :data:`SEARCH`, each setting
overridable): several proposals per step, each leading with a different problem; a
strict minibatch pre-check before paying for validation; a pool that keeps per-example
specialists (its parent is the best candidate unless ``pareto=True`` draws from the
Pareto front, see :data:`SEARCH`); and :meth:`Reflect.merge`, which combines two
specialists into one value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import prompts
from ..core.variable import Parameter
from ..llm.base import Request
from ..prompts.kinds import describe_kind, reply_reminder
from .base import complete_whole, repair_request, value_text
from .tgd import _FORMAT, TGD

__all__ = ["SEARCH", "Reflect"]

# the trainer settings reflect is meant to run with (an explicit option wins). Parents are
# the best candidate, not draws from the Pareto front: on benchmarks/quality (800 metric
# calls, 50 validation examples, 5% task-model slips) front draws mostly spent the budget
# improving weaker candidates, whose wins were largely slips of the better one
# (counting_hard 0.80 against 0.90, triage_pipeline 0.85-0.90 against 0.91); ``pareto=True``
# turns them on, for larger budgets and real per-example specialists. Merge still combines
# two pool candidates that win on different validation examples.
SEARCH: dict[str, Any] = {
    "pareto": False,
    "gate": "minibatch-improve",
    "beam": 2,
    "pool_size": 8,
    "merge": True,
}


class Reflect(TGD):
    """Reflective rewrites from the step's evidence; see the module doc."""

    def __init__(self, parameters: Iterable[Parameter] | Any, engine: Any = None, *,
                 critique: bool = True, evidence_budget: int = 5000,
                 prompt: str = "reflect_update", merge_prompt: str = "reflect_merge",
                 **options: Any) -> None:
        super().__init__(parameters, engine, evidence_budget=evidence_budget, prompt=prompt,
                         **options)
        self.critique = critique
        self.merge_prompt = merge_prompt
        self._variant = 0

    def propagator(self) -> Any:
        if self.critique:  # TGD's: a backward model's critique of each failing example
            return super().propagator()
        from ..backward import TracePropagator

        return TracePropagator()

    def step(self, sample_id: str | None = None) -> Any:
        # the trainer numbers a step's proposals "seed:step:j"; proposal j leads with the
        # j-th most frequent problem, so the proposals differ in substance, not by chance
        tail = (sample_id or "").rsplit(":", 1)[-1]
        self._variant = int(tail) if tail.isdigit() else 0
        return super().step(sample_id)

    def _evidence_offset(self) -> int:
        return self._variant

    # -- merge -----------------------------------------------------------------------
    def merge(self, p: Parameter, a: Any, b: Any, a_note: str, b_note: str,
              sample_id: str | None = None) -> tuple[Any, int, list[dict[str, str]]]:
        """One value combining ``a`` and ``b`` (each best on other examples).

        Returns ``(value or None, calls, events)``; None when the reply was unusable
        after one repair, with the reason in the events.
        """
        name = next((n for n, q in self.names.items() if q is p), p.name)
        request = Request(messages=[
            {"role": "system", "content": prompts.load(self.merge_prompt)},
            {"role": "user", "content": self._merge_request(name, p, a, b, a_note, b_note)},
        ], purpose="optimizer", sample_id=sample_id)
        engine = self.engine
        reply, calls, events = complete_whole(engine, request)  # a cut merge is asked again
        if not reply and events:
            return None, calls, events
        value, problem = self._parse(p, reply)
        if problem is not None:
            reply = engine.complete(repair_request(request, reply, problem[1], _FORMAT)).text
            calls += 1
            value, problem = self._parse(p, reply or "")
            if problem is not None:
                events.append({"event": f"merge_{problem[0]}", "detail": problem[1]})
                return None, calls, events
        return value, calls, events

    def _merge_request(self, name: str, p: Parameter, a: Any, b: Any, a_note: str,
                       b_note: str) -> str:
        kind = p.value_kind
        return "\n\n".join([
            f"## The variable\nname: {name}\nrole: {p.role or 'not described'}\n"
            f"kind: {describe_kind(kind)}",
            f"## Version A\n<version_a>\n{value_text(a)}\n</version_a>\n"
            f"What it gets right: {a_note}",
            f"## Version B\n<version_b>\n{value_text(b)}\n</version_b>\n"
            f"What it gets right: {b_note}",
            "## Constraints (the merged value must satisfy every one)\n"
            + "\n".join(f"- {c}" for c in self.constraint_lines(p)),
            f"## Your reply\nWrite {_FORMAT}. {reply_reminder(kind)}".rstrip(),
        ])
