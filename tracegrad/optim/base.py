"""What every optimizer shares: parameter names, the step result, memory, untrusted replies.

An optimizer turns feedback (or scores) into new parameter values with an LLM. Three
things make that safe to run unattended, and they live here so each optimizer gets
them the same way:

* **Names.** Replies, history and step results refer to parameters by name, so names
  must be unique within an optimizer; colliding names get a ``#2`` suffix.
* **Atomic steps.** All proposals of a step are gathered first and applied together;
  if the engine raises (budget exhausted, network down) nothing is applied, and the
  error reaches the training loop untouched. ``StepResult.revert()`` undoes a step for
  validation gating.
* **Memory.** ``record_score`` keeps the values the program was scored with, so the next
  request can show what already worked ("momentum") without growing without bound.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import string
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .. import prompts
from ..core.concurrency import run_concurrently
from ..core.context import get_backward_llm
from ..core.feedback import (
    Evidence,
    FeedbackItem,
    collect_feedback,
    is_positive,
    render_feedback,
)
from ..core.shorten import render, shorten
from ..core.variable import Parameter
from ..llm.base import Request
from . import constraints as cons

# events that mean a proposal was made and thrown away (not that nothing was proposed)
REJECTIONS = frozenset({"constraint_violation", "missing_tags", "empty_value", "invalid_reply",
                        "unknown_key", "cut_twice"})

MAX_PARAM_EVENTS = 200  # per parameter: a long run must not grow memory without bound

@dataclass
class StepResult:
    """What one ``step()`` did. ``previous`` has the same keys as ``updated``."""

    updated: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    reverted: bool = False
    _params: dict[str, Parameter] = field(default_factory=dict, repr=False, compare=False)
    _on_revert: Callable[[StepResult], None] | None = field(default=None, repr=False, compare=False)

    def revert(self) -> None:
        """Put the previous values back (a validation gate rejected the step). Idempotent."""
        if self.reverted:
            return
        for name, old in self.previous.items():
            p = self._params.get(name)
            if p is not None:
                p.value = old
                p.events.append({"param": name, "event": "reverted", "detail": "step was reverted"})
                del p.events[:-MAX_PARAM_EVENTS]
        self.reverted = True
        if self._on_revert is not None:
            self._on_revert(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "previous": self.previous,
            "unchanged": list(self.unchanged),
            "events": list(self.events),
            "calls": self.calls,
            "reverted": self.reverted,
        }


# -- feedback -----------------------------------------------------------------------


CONDENSE = ("select", "summary")


def check_condense(how: str) -> str:
    """How over-budget feedback is cut: ``select`` (:mod:`tracegrad.core.condense`, no
    call) or ``summary`` (one LLM call, :func:`summarise_feedback`)."""
    if how not in CONDENSE:
        raise ValueError(f"condense={how!r}: use one of {', '.join(map(repr, CONDENSE))}")
    return how


def summarise_feedback(
    engine: Any,
    items: list[FeedbackItem],
    *,
    about: str,
    limit: int,
    input_limit: int,
    prompt: str = "feedback_summary",
    sample_id: str | None = None,
) -> tuple[str, int, list[dict[str, Any]]]:
    """Condense feedback that is over budget with one LLM call; the result fits ``limit``.

    The summary request is itself bounded: each item gets an equal share of
    ``input_limit``, and items that do not fit even at a minimal share are left out
    (and that is reported), so a huge batch cannot make this call explode.
    """
    events: list[dict[str, Any]] = []
    share = max(160, input_limit // max(len(items), 1) - 120)
    shown: list[FeedbackItem] = []
    size = 0
    for it in items:
        est = min(len(it.text), share) + 160
        if shown and size + est > input_limit:
            break
        shown.append(it)
        size += est
    omitted = len(items) - len(shown)
    body = render_feedback(shown, context_limit=min(200, share // 3), text_limit=share)
    if omitted:
        body += f"\n[{omitted} more feedback items were left out to keep this request bounded]"
        events.append({"event": "feedback_truncated",
                       "detail": f"{omitted} of {len(items)} items did not fit the summary request"})
    system = string.Template(prompts.load(prompt)).safe_substitute(limit=str(limit))
    request = Request(
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": f"The variable: {about}\n\nFeedback items:\n{body}"},
        ],
        purpose="optimizer",
        sample_id=sample_id,
    )
    reply = engine.complete(request).text or ""
    summary = reply.strip()
    if not summary:
        events.append({"event": "summary_failed", "detail": "empty summary; feedback was shortened"})
        summary = render_feedback(shown, context_limit=0, text_limit=max(80, limit // max(len(shown), 1)))
    return shorten(summary, limit), 1, events


# -- values and replies ----------------------------------------------------------------


def complete_whole(engine: Any, request: Request) -> tuple[str, int, list[dict[str, str]]]:
    """A meta call's reply, asked once more with twice the reply limit if it was cut.

    A rewrite cut at the token limit is not a shorter rewrite: applied, it would delete
    the part of the value the model never got to. Returns (text, calls, events); text is
    "" when the second reply was cut too (a ``cut_twice`` event: callers must not send
    that to a repair request, which would only pay for a call on nothing).
    """
    c = engine.complete(request)
    if getattr(c, "problem", None) != "length":
        return c.text or "", 1, []
    limit = 2 * (c.completion_limit or 1024)
    params = {k: v for k, v in request.params.items()
              if k not in ("max_tokens", "max_completion_tokens")}
    again = engine.complete(dataclasses.replace(request, params={**params, "max_tokens": limit}))
    events = [{"event": "cut_reply", "detail": f"the reply was cut at {c.completion_limit} "
               f"tokens; asked again with {limit}"}]
    if getattr(again, "problem", None) == "length":  # nothing whole to apply or repair
        events.append({"event": "cut_twice", "detail": f"cut again at {limit} tokens; the reply "
                       "is not used (kept the previous value)"})
        return "", 2, events
    return again.text or "", 2, events


def value_text(value: Any) -> str:
    """The full text of a value as the optimizer should see and reproduce it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, indent=2)
    return render(value)


def extract_tag(text: str, tag: str) -> str | None:
    """The content of the last complete ``<tag>...</tag>`` block, or None."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text or "", re.S)
    if not found:
        return None
    v = found[-1]
    if v.startswith("\r\n"):
        v = v[2:]
    elif v.startswith("\n"):
        v = v[1:]
    return v[:-1] if v.endswith("\n") else v


def repair_request(request: Request, reply: str, problem: str, fmt: str) -> Request:
    note = string.Template(prompts.load("optimizer_repair")).safe_substitute(
        problem=problem, format=fmt
    )
    return request.with_messages([
        *request.messages,
        {"role": "assistant", "content": shorten(reply, 6000)},
        {"role": "user", "content": note},
    ])


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.rstrip("\n") == b.rstrip("\n")
    return type(a) is type(b) and a == b


# -- the optimizer ---------------------------------------------------------------------


class OptimizerOptions(TypedDict, total=False):
    """The options every optimizer takes (subclasses pass them on as ``**common``).

    ``constraints``: sentences (or checks) every new value must satisfy, on top of each
    parameter's own; ``history``: how many scored entries a request shows (default per
    optimizer); ``max_concurrency``: calls in flight at once (default: the engine's
    limit, else 8).
    """

    constraints: Iterable[cons.Constraint]
    history: int | None
    max_concurrency: int | None


class Optimizer:
    """Base class. Subclasses implement ``step()`` with the helpers below.

    The constructor options all optimizers share are taken here, once; a subclass
    declares only its own and passes ``**common`` on (see :class:`OptimizerOptions`).
    """

    needs_backward: bool = True
    default_history: int = 3

    def __init__(
        self,
        parameters: Iterable[Parameter] | Any,
        engine: Any = None,
        *,
        constraints: Iterable[cons.Constraint] = (),
        history: int | None = None,
        max_concurrency: int | None = None,
        **opts: Any,
    ) -> None:
        if opts:
            raise TypeError(
                f"{type(self).__name__} got unexpected option(s): {', '.join(sorted(opts))}"
            )
        if hasattr(parameters, "parameters") and not isinstance(parameters, list | tuple | set):
            parameters = parameters.parameters()
        self.params: list[Parameter] = []
        self.names: dict[str, Parameter] = {}
        seen: set[int] = set()
        for p in parameters:
            if not isinstance(p, Parameter):
                raise TypeError(f"optimizers take Parameters, got {type(p).__name__}: {p!r}")
            if id(p) in seen:
                continue
            name = p.name
            n = 2
            while name in self.names:
                name = f"{p.name}#{n}"
                n += 1
            if p.value_type is not None:
                try:
                    cons.type_adapter(p.value_type)
                except Exception as e:  # noqa: BLE001 - report the user's type error up front
                    raise TypeError(f"parameter {p.name!r}: value_type {p.value_type!r} "
                                    f"cannot be validated: {e}") from None
            self.params.append(p)
            self.names[name] = p
            seen.add(id(p))
            p.optimizer_ref = weakref.ref(self)
        if not self.params:
            raise ValueError("the optimizer got no parameters")
        self._engine = engine
        self.constraints: list[cons.Constraint] = list(constraints)
        self.history_size = self.default_history if history is None else max(0, int(history))
        self.max_concurrency = max_concurrency
        self.history: list[dict[str, Any]] = []
        self.evidence: list[Evidence] = []
        self._warned_unusable = self._warned_no_feedback = False
        self.task = getattr(self, "task", "") or ""  # what the program is for (set_task)
        self.steps = 0
        self._led_to: dict[str, str] = {}
        self._sample: str | None = None

    # -- public API ------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The engine given at construction, else the current backward engine."""
        return self._engine or get_backward_llm()

    def propagator(self) -> Any:
        return None

    def set_task(self, text: str) -> None:
        """What the program is for; shown at the top of every update request.

        Set by the trainer from ``task=``, a prompt file's description and output, or the
        program's docstring. Without it a rewrite is judged only against feedback, and a
        prompt can drift towards the examples instead of the job.
        """
        self.task = (text or "").strip()

    def task_section(self) -> list[str]:
        return [f"## The task\n{self.task}"] if self.task else []

    def observe(self, evidence: Iterable[Evidence]) -> None:
        """The examples of the step about to be taken, as the metric scored them.

        The trainer calls this before :meth:`step`; an optimizer that shows them in its
        request (TGD, reflect) grounds a rewrite in what happened, not only in critiques.
        """
        self.evidence = list(evidence)

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self, sample_id: str | None = None) -> StepResult:  # pragma: no cover - abstract
        """Propose and apply new values. A distinct ``sample_id`` asks for a fresh sample
        (it is part of the cache key), e.g. for several proposals from the same state."""
        raise NotImplementedError

    def calls_per_step(
        self,
        n_params: int,
        n_failures: int,
        batch: int,
        *,
        llm_calls: int = 1,
        feedback_chars: int = 0,
        example_chars: int = 0,
        worst: bool = False,
    ) -> dict[str, int]:
        """The LLM calls one training step makes with this optimizer: backward + ``step()``.

        Declared here, next to the code that makes the calls, so a cost estimate cannot
        drift from it (``tests/optim/test_registry.py`` checks every declaration against
        the calls a mock engine receives). The keys are always ``backward`` (feedback
        requests), ``summary`` (condensing feedback that is over budget), ``optimizer``
        (update requests) and ``repair`` (a second try after an unusable reply: 0 when
        replies are well-formed, the most possible with ``worst=True``).

        ``n_params``: trainable parameters that receive feedback. ``n_failures``: the
        batch's failed examples; the other ``batch - n_failures`` cost no backward call
        (their "correct, keep it" feedback passes through), and a step without failures
        makes no call at all (the trainer skips it). ``llm_calls``: LLM calls per example
        with a trainable input (1 for a prompt file). ``feedback_chars``: the feedback of
        one failed example as the optimizer receives it (TGD: the backward reply about a
        parameter; trace: the metric's explanation); over the optimizer's
        ``feedback_budget`` in total, it is condensed by a summary call first.
        ``example_chars``: what one failed call adds to a batched backward request.
        """
        if not 0 <= n_failures <= batch:
            raise ValueError(f"n_failures must be between 0 and batch ({batch}), got {n_failures}")
        calls = dict.fromkeys(("backward", "summary", "optimizer", "repair"), 0)
        if n_failures == 0 or n_params <= 0:
            return calls
        prop = self.propagator() if self.needs_backward else None
        if prop is not None:
            calls["backward"] = llm_calls * prop.calls_for(n_failures, example_chars)
            if worst:
                calls["repair"] += llm_calls * prop.calls_for(n_failures, example_chars,
                                                              worst=True) - calls["backward"]
        own = self._step_calls(n_params, n_failures, feedback_chars, worst)
        for key, n in own.items():
            calls[key] += n
        return calls

    def _step_calls(self, n_params: int, n_failures: int, feedback_chars: int,
                    worst: bool) -> dict[str, int]:
        """``step()``'s own calls (``summary``, ``optimizer``, ``repair``); see calls_per_step."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its calls per step")

    def record_score(self, score: float, feedback: str = "") -> None:
        """Remember the score of the current values (a second score for the same values
        is averaged in: more evaluations, a better estimate)."""
        values = self.values()
        key = _key(values)
        for entry in self.history:
            if _key(entry["values"]) == key:
                entry["n"] += 1
                entry["score"] += (float(score) - entry["score"]) / entry["n"]
                entry["step"] = self.steps
                if feedback:
                    entry["feedback"] = shorten(feedback, 2000)
                self.history.remove(entry)
                self.history.append(entry)
                break
        else:
            self.history.append({
                "step": self.steps,
                "values": values,
                "score": float(score),
                "n": 1,
                "feedback": shorten(feedback, 2000) if feedback else "",
                "led_to": {k: v for k, v in self._led_to.items() if k in values},
            })
        self._trim_history()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": type(self).__name__,
            "steps": self.steps,
            "history": json.loads(json.dumps(self.history, default=str)),
            "led_to": dict(self._led_to),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))
        self.history = [dict(e) for e in state.get("history", [])]
        for e in self.history:
            e.setdefault("n", 1)
            e.setdefault("feedback", "")
            e.setdefault("led_to", {})
        self._led_to = dict(state.get("led_to", {}))
        self._trim_history()

    # -- helpers for subclasses -------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {name: p.value for name, p in self.names.items()}

    def _trim_history(self) -> None:
        """Keep the most recent entries (OPRO keeps the best ones instead)."""
        if len(self.history) > self.history_size:
            del self.history[: len(self.history) - self.history_size]

    def _pool_size(self, engine: Any) -> int:
        return max(1, self.max_concurrency or getattr(engine, "max_concurrency", None) or 8)

    def constraint_lines(self, param: Parameter) -> list[str]:
        return cons.describe(param, self.constraints)

    def check(self, param: Parameter, raw: Any) -> tuple[Any, list[str]]:
        return cons.check(param, raw, self.constraints)

    def _new_result(self) -> StepResult:
        return StepResult(_params=dict(self.names))

    def _event(self, result: StepResult, name: str, event: str, detail: str = "", **extra: Any) -> None:
        ev = {"param": name, "event": event, "detail": detail, "step": self.steps + 1, **extra}
        result.events.append(ev)
        p = self.names.get(name)
        if p is not None:
            p.events.append(ev)
            del p.events[:-MAX_PARAM_EVENTS]  # a long run must not grow memory without bound

    def _apply(self, result: StepResult, proposals: dict[str, Any], reasons: dict[str, str]) -> None:
        """Apply all accepted values at once and fill ``updated``/``previous``/``unchanged``."""
        for name, p in self.names.items():
            if name in proposals and not same_value(proposals[name], p.value):
                result.previous[name] = p.value
                result.updated[name] = proposals[name]
            elif name not in result.unchanged:
                result.unchanged.append(name)
        before = {n: self._led_to.get(n) for n in result.updated}
        for name, value in result.updated.items():
            self.names[name].value = value
            self._led_to[name] = shorten(reasons.get(name, ""), 1500)

        def restore(_: StepResult) -> None:
            for n, text in before.items():
                if text is None:
                    self._led_to.pop(n, None)
                else:
                    self._led_to[n] = text

        result._on_revert = restore
        self.steps += 1
        self._warn_if_unusable(result)

    def _warn_if_unusable(self, result: StepResult) -> None:
        """Never a silent no-op: a step whose every proposal was thrown away says so, once."""
        bad = [e for e in result.events if e.get("event") in REJECTIONS]
        if result.updated or not bad or self._warned_unusable:
            return
        self._warned_unusable = True
        warnings.warn(f"{type(self).__name__}.step() changed nothing: the proposal was "
                      f"rejected ({bad[0]['event']}: {shorten(bad[0].get('detail', ''), 200)}); "
                      "see StepResult.events", RuntimeWarning, stacklevel=4)

    def _warn_if_no_feedback(self) -> None:
        """``step()`` before ``backward()``: nothing to learn from, and nothing says why."""
        trainable = [p for p in self.names.values() if p.requires_grad]
        if trainable and not any(p.grads for p in trainable) and not self._warned_no_feedback:
            self._warned_no_feedback = True
            warnings.warn(f"{type(self).__name__}.step(): no parameter has feedback; call "
                          "loss.backward() before step()", RuntimeWarning, stacklevel=3)

    def _run_parallel(self, fn: Callable[..., Any], engine: Any, jobs: list[Any]) -> list[Any]:
        """``fn(engine, job)`` for every job, concurrently, each in a copy of the caller's
        context (so context-scoped settings such as ``tg.backward_llm(...)`` or a budget
        still apply inside the worker threads). Raises only once no call is running, so
        nothing is still calling the engine when ``step()`` returns."""
        return run_concurrently(functools.partial(fn, engine), jobs,
                                max_workers=self._pool_size(engine), thread_name_prefix="tg-optim")


def _key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)


__all__ = [
    "FeedbackItem", "Optimizer", "OptimizerOptions", "StepResult", "collect_feedback", "extract_tag", "is_positive",
    "check_condense", "render_feedback", "repair_request", "same_value", "summarise_feedback", "value_text",
]
