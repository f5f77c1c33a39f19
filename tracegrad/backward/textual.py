"""The textual propagator: where feedback for your prompt comes from.

Walk the graph from the loss in generations (every consumer of a node sits in an
earlier generation). For each node that has feedback:

* a plain op (format, python function, loss, aggregate) routes the feedback to its
  inputs itself -- ``node.op.backward(node)``, no LLM call;
* an LLM call whose feedback only says "correct, keep it" passes that through as is;
* any other LLM call asks the backward engine once for *all* its inputs that need feedback:
  "here is what went in, what came out and what was said about it -- how should each
  input change?" The reply is a JSON object with one entry per input.

With ``batch_feedback=True`` the LLM nodes of one generation that share a parameter
(one prompt used across a batch) are asked about together, chunked to a size budget,
so a batch of 16 costs one or two calls instead of 16.

All calls of one generation run concurrently, bounded by ``max_concurrency``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import prompts
from ..core.concurrency import shared_pool
from ..core.context import get_backward_llm
from ..core.feedback import is_positive, says_no_change  # THE "asks for no change"
from ..core.keys import match_keys
from ..core.shorten import shorten
from ..core.values import Image, has_images
from ..core.variable import Feedback, Parameter, Variable, generations
from ..llm.base import Request, StructuredOutputError
from ..llm.structured import complete_json
from .result import BackwardResult

_NODE_OVERHEAD = 200  # headers and tags around one node in a batched request

T = TypeVar("T")


def _chunks(items: Iterable[T], sizes: list[int], budget: int) -> list[list[T]]:
    """``items`` in order, cut into runs whose sizes add up to at most ``budget`` (an item
    bigger than the budget gets a chunk of its own)."""
    out: list[list[T]] = []
    chunk: list[T] = []
    size = 0
    for item, est in zip(items, sizes, strict=True):
        if chunk and size + est > budget:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(item)
        size += est
    if chunk:
        out.append(chunk)
    return out


@dataclass
class _Target:
    key: str
    var: Variable
    nodes: list[Variable]


class TextualPropagator:
    def __init__(
        self,
        engine: Any = None,
        *,
        max_concurrency: int | None = None,
        batch_feedback: bool = False,
        chunk_chars: int = 16000,
        value_limit: int = 2000,
        feedback_limit: int = 4000,
        prompt: str = "textual_backward",
        send_images: bool | None = None,
    ) -> None:
        self.engine = engine
        self.max_concurrency = max_concurrency
        self.batch_feedback = batch_feedback
        self.chunk_chars = chunk_chars
        self.value_limit = value_limit
        self.feedback_limit = feedback_limit
        self.prompt = prompt
        # True when the backward model takes images: inputs that are images are attached
        # to its request; otherwise it reads a placeholder saying what it is not shown.
        # None: the engine decides (``engine.accepts_images = True``, see accepts_images)
        self.send_images = send_images
        self._images = bool(send_images)

    # -- driver ----------------------------------------------------------------
    def run(self, root: Variable) -> BackwardResult:
        t0 = time.perf_counter()
        engine = self.engine or get_backward_llm()
        self._images = self.send_images if self.send_images is not None else \
            accepts_images(engine)
        limit = self.max_concurrency or getattr(engine, "max_concurrency", None) or 8
        result = BackwardResult()
        gens = generations(root)
        result.nodes = sum(len(g) for g in gens)
        # each call runs in a copy of the caller's context: a budget or call log scoped
        # with ``with`` around backward() applies inside the workers too; the pool's
        # threads outlive this call, so the next step's backward starts none
        pool = shared_pool(limit, "tg-backward")
        for gen in gens:
            llm_nodes = []
            for node in gen:
                if node.op is None or not node.grads or not node.requires_grad:
                    continue
                if node.op.uses_llm:
                    if all(is_positive(g) for g in node.grads):
                        # "this was right, keep it" needs no rewriting by a model: pass
                        # it through as it is and save the call
                        node.op.backward(node)
                    elif any(v.requires_grad for v in node.op.inputs.values()):
                        llm_nodes.append(node)
                else:
                    node.op.backward(node)
            if not llm_nodes:
                continue
            jobs = self._jobs(llm_nodes)
            outcomes = pool.map(functools.partial(self._ask, engine), jobs)
            for assignments, calls, events in outcomes:
                result.calls += calls
                result.events.extend(events)
                for var, fb in assignments:
                    var.add_feedback(fb)
        result.elapsed_s = time.perf_counter() - t0
        return result

    # -- grouping --------------------------------------------------------------
    def _jobs(self, nodes: list[Variable]) -> list[list[Variable]]:
        if not self.batch_feedback or len(nodes) == 1:
            return [[n] for n in nodes]
        groups: dict[tuple[int, ...], list[Variable]] = {}
        for n in nodes:
            key = tuple(sorted(v.id for v in n.op.inputs.values()  # type: ignore[union-attr]
                               if isinstance(v, Parameter) and v.requires_grad))
            groups.setdefault(key, []).append(n)
        jobs: list[list[Variable]] = []
        for key, members in groups.items():
            if not key:
                jobs.extend([m] for m in members)
            else:
                jobs.extend(_chunks(members, [self._node_size(m) for m in members],
                                    self.chunk_chars))
        return jobs

    def calls_for(self, nodes: int, node_chars: int = 0, *, worst: bool = False) -> int:
        """The calls backward makes for ``nodes`` LLM calls of one generation that share a
        parameter and whose feedback asks for a change (the others cost nothing).

        ``node_chars`` is what one of them adds to a batched request (its output, feedback
        and inputs other than parameters, each capped at ``value_limit``/``feedback_limit``);
        it decides the number of chunks with ``batch_feedback``. ``worst=True`` counts the
        one repair every request may need. Uses the same chunking as :meth:`run`.
        """
        asks = nodes if not self.batch_feedback or nodes <= 1 else \
            len(_chunks(range(nodes), [node_chars + _NODE_OVERHEAD] * nodes, self.chunk_chars))
        return 2 * asks if worst else asks

    def _node_size(self, n: Variable) -> int:
        op = n.op
        assert op is not None
        size = min(len(n.text), self.value_limit) + min(len(n.feedback_text), self.feedback_limit)
        for v in op.inputs.values():
            if not isinstance(v, Parameter):
                size += min(len(v.text), self.value_limit)
        return size + _NODE_OVERHEAD

    # -- one backward call ------------------------------------------------------
    def _targets(self, job: list[Variable]) -> list[_Target]:
        shared: dict[int, _Target] = {}
        targets: list[_Target] = []
        for i, n in enumerate(job):
            for key, var in n.op.inputs.items():  # type: ignore[union-attr]
                if not var.requires_grad:
                    continue
                if len(job) > 1 and isinstance(var, Parameter):
                    if var.id not in shared:
                        shared[var.id] = _Target(key, var, [n])
                        targets.append(shared[var.id])
                    else:
                        shared[var.id].nodes.append(n)
                        if shared[var.id].key != key:  # used under different names: use its own
                            shared[var.id].key = var.name
                else:
                    targets.append(_Target(key if len(job) == 1 else f"#{i + 1}.{key}", var, [n]))
        keys = [t.key for t in targets]
        for t in targets:  # keys must be unique: fall back to the variable's own name
            if keys.count(t.key) > 1 and not t.key.startswith("#"):
                t.key = t.var.name
        return targets

    def _render(self, job: list[Variable], targets: list[_Target],
                attached: list[Image] | None = None) -> str:
        shared_ids = {t.var.id for t in targets if len(job) > 1 and isinstance(t.var, Parameter)}
        lines: list[str] = []
        op0 = job[0].op
        assert op0 is not None
        if len(job) > 1:
            lines.append(f"The same step `{op0.name}` ran {len(job)} times (one per example).")
            lines.append("## Shared inputs (identical in every run)")
            for t in targets:
                if t.var.id in shared_ids:
                    lines.append(self._input_block(t.key, t.var, True, attached))
        for i, n in enumerate(job):
            op = n.op
            assert op is not None
            header = f"## Run #{i + 1}" if len(job) > 1 else f"## Step `{op.name}`"
            lines.append(header)
            lines.append("### Inputs")
            for key, var in op.inputs.items():
                if var.id in shared_ids:
                    continue
                label = key if len(job) == 1 else f"#{i + 1}.{key}"
                lines.append(self._input_block(label, var, var.requires_grad, attached))
            lines.append(f"### Output ({n.role})\n<output>\n{shorten(n.value, self.value_limit)}\n</output>")
            fb = "\n".join(f"- {shorten(g.text, 1500)}" for g in n.grads)
            lines.append(f"### Feedback on the output\n{shorten(fb, self.feedback_limit)}")
        lines.append("## Inputs to give feedback on")
        for t in targets:
            lines.append(f"- `{t.key}`: {t.var.role or 'input'}")
        return "\n\n".join(lines)

    def _input_block(self, key: str, var: Variable, wants: bool,
                     attached: list[Image] | None = None) -> str:
        mark = " (give feedback on this)" if wants else ""
        value = self._shown(var.value, attached) if has_images(var.value) else var.value
        return f"<input key=\"{key}\" role=\"{var.role}\"{mark}>\n{shorten(value, self.value_limit)}\n</input>"

    def _shown(self, value: Any, attached: list[Image] | None) -> str:
        """An input holding images as text: each image a reference to the copy attached to
        the request, or (``send_images`` off) a placeholder saying what it is."""
        items = value if isinstance(value, list | tuple) else [value]
        out = []
        for item in items:
            if not isinstance(item, Image):
                out.append(str(item))
            elif self._images and attached is not None:
                attached.append(item)
                out.append(f"[image #{len(attached)}, attached below]")
            else:
                out.append(f"[an image ({item.mime}, {len(item.data)} bytes) that the model "
                           "saw; not shown to you]")
        return "\n".join(out)

    def _content(self, job: list[Variable], targets: list[_Target]) -> Any:
        """The user message: text, plus the inputs' images when ``send_images`` is on."""
        attached: list[Image] = []
        text = self._render(job, targets, attached)
        if not attached:
            return text
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for i, img in enumerate(attached, 1):
            parts.append({"type": "text", "text": f"image #{i}:"})
            parts.append({"type": "image_url", "image_url": {"url": img.data_url()}})
        return parts

    def _ask(self, engine: Any, job: list[Variable]) -> tuple[list[tuple[Variable, Feedback]], int, list[dict[str, Any]]]:
        targets = self._targets(job)
        keys = [t.key for t in targets]
        request = Request(
            messages=[
                {"role": "system", "content": prompts.load(self.prompt)},
                {"role": "user", "content": self._content(job, targets)},
            ],
            purpose="backward",
        )

        def validate(data: Any) -> dict[str, str]:
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object mapping input keys to feedback strings")
            found = _feedback_by_key(data, keys)
            missing = [k for k in keys if k not in found]
            if missing:
                raise ValueError(f"missing or empty feedback for: {', '.join(missing)}")
            return found

        events: list[dict[str, Any]] = []
        op0 = job[0].op
        assert op0 is not None
        try:
            found, _, calls = complete_json(engine, request, validate)
        except StructuredOutputError as e:
            found, calls = {}, 2
            events.append({"event": "backward_fallback", "node": job[0].name, "error": str(e)[:300]})
        assignments: list[tuple[Variable, Feedback]] = []
        for t in targets:
            context = {"op": op0.name, "outputs": [n.name for n in t.nodes]}
            text = found.get(t.key)
            if text is None:
                # The model failed twice: pass the output feedback through unchanged,
                # so the signal is not lost, and say so.
                text = "\n".join(g.text for n in t.nodes for g in n.grads)
                context["fallback"] = True
            if says_no_change(text):  # "no change needed" for this input: nothing to pass on
                continue
            assignments.append((t.var, Feedback(text, source=job[0].name, context=context)))
        return assignments, calls, events


def accepts_images(engine: Any) -> bool:
    """Whether an engine (or one it wraps) says it takes image input: ``accepts_images``."""
    e = engine
    while e is not None:
        flag = vars(e).get("accepts_images") if hasattr(e, "__dict__") else None
        if isinstance(flag, bool):
            return flag
        e = getattr(e, "inner", None)
    return False


def _feedback_by_key(data: dict[str, Any], keys: list[str]) -> dict[str, str]:
    """The reply's non-empty feedback strings by the keys we asked for (the keys matched
    the way every reply in tracegrad is read: :func:`tracegrad.core.keys.match_keys`)."""
    given = {k: t for k, v in data.items() if (t := _feedback_text(v))}
    matched, _ = match_keys(given, keys)
    return {name: given[k] for k, name in matched.items()}


_PARTS = ("diagnosis", "evidence", "change")


def _feedback_text(v: Any) -> str:
    """One input's feedback as text: a string as given, a structured reply as its parts.

    The reply asks for diagnosis, evidence and change apart, so a critique cannot skip
    the reason or the proof; the optimizer reads them as labelled lines. A structured
    reply whose change says there is nothing to change counts as "no change needed".
    """
    if v is None:
        return ""
    if isinstance(v, dict):
        parts = {str(k).strip().lower(): str(x).strip() for k, x in v.items()
                 if x is not None and str(x).strip()}
        if not any(p in parts for p in _PARTS):
            return json.dumps(v, ensure_ascii=False) if parts else ""
        change = parts.get("change", "")
        if change and says_no_change(change):  # whatever the diagnosis, nothing to do
            return change
        return "\n".join(f"{p.capitalize()}: {parts[p]}" for p in _PARTS if p in parts)
    return str(v).strip()
