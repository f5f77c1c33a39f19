"""The terminal display of a run or an evaluation, on stderr.

Two displays share one idea: what a user waits for is an evaluation (the baseline on
1,000 validation rows, a candidate's validation), so every evaluation reports each
finished example -- count, ETA, and the calls, tokens and dollars spent so far, read
live from the meters. On a terminal it is drawn by ``rich`` and redrawn four times a
second, so the clock and the spend move even while no example finishes; when stderr is
not a terminal (CI, a pipe) it is one status line at most every few seconds, so logs stay
readable.

:class:`Progress` is optimize's status table, :class:`EvalProgress` the bar of
``evaluate``. Both are evaluation observers for :class:`~tracegrad.train.evaluate.Runner`
(``begin`` / ``advance`` / ``end``). The only module of the library besides the CLI that
uses ``rich`` (imported when a display starts, so ``import tracegrad`` stays fast);
results go to stdout, never here. Text that may come from a model or a server is
scrubbed of secrets first (:mod:`tracegrad.redaction`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..redaction import scrub_text

__all__ = ["EvalProgress", "Progress", "eval_progress"]

UsageFn = Callable[[], dict[str, Any]]
LINE_INTERVAL = 5.0  # seconds between two status lines when stderr is not a terminal


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def usage_cells(usage: dict[str, Any] | None) -> tuple[str, str, str]:
    """(calls, tokens, dollars) of a meter snapshot, "-" when nothing is metered."""
    u = usage or {}
    if not u.get("metered", "total" in u):
        return "-", "-", "-"
    t = u.get("total") or {}
    tok = int(t.get("total_tokens", 0) or 0)
    tok_s = f"{tok / 1000:.1f}k" if tok >= 1000 else str(tok)
    return str(t.get("calls", 0)), tok_s, f"${float(t.get('usd', 0.0) or 0.0):.4f}"


class _Count:
    """One evaluation's progress: done of total, and the ETA from its rate so far."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.t0 = time.perf_counter()

    def eta(self) -> str:
        if self.done <= 0:
            return "?"
        if self.done >= self.total:
            return "0s"
        rate = (time.perf_counter() - self.t0) / self.done
        return _duration(rate * (self.total - self.done))

    def text(self) -> str:
        return f"{self.label} {self.done}/{self.total} ETA {self.eta()}"


class _Observer:
    """What both displays share: the usage source, the count, the throttled status line."""

    def __init__(self, enabled: bool, usage_fn: UsageFn | None, console: Any,
                 interval: float | None) -> None:
        self.enabled = enabled
        self.usage_fn = usage_fn
        self.interval = LINE_INTERVAL if interval is None else interval
        self.t0 = time.perf_counter()
        self.count: _Count | None = None
        self.lock = threading.Lock()
        self._last_line = 0.0
        self._printed: int | None = None  # the count the last status line showed
        self.console: Any = None
        if enabled:
            from rich.console import Console

            self.console = console or Console(stderr=True, highlight=False)

    @property
    def terminal(self) -> bool:
        return self.console is not None and bool(self.console.is_terminal)

    def usage(self) -> dict[str, Any] | None:
        if self.usage_fn is None:
            return None
        try:
            return self.usage_fn()
        except Exception:  # noqa: BLE001 - a display must never end a run
            return None

    def usage_text(self) -> str:
        calls, tok, usd = usage_cells(self.usage())
        return f"calls {calls}  tokens {tok}  {usd}"

    def status_line(self) -> str:
        c = self.count
        head = c.text() if c is not None else ""
        return f"{head}  {self.usage_text()}  elapsed {_duration(time.perf_counter() - self.t0)}"

    def _print_line(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_line < self.interval:
            return
        self._last_line = now
        self._printed = self.count.done if self.count is not None else None
        self.console.print(scrub_text(self.status_line()), markup=False, soft_wrap=True)

    # -- the Runner's observer protocol -------------------------------------------------
    def begin(self, label: str, total: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.count = _Count(scrub_text(label), total)
            self._last_line = time.perf_counter()  # the first line after `interval`
            self._on_begin()

    def advance(self, n: int = 1) -> None:
        if not self.enabled or self.count is None:
            return
        with self.lock:
            self.count.done += n
            if self.terminal:
                self._on_advance()
            else:
                self._print_line()

    def end(self) -> None:
        if not self.enabled or self.count is None:
            return
        with self.lock:
            if not self.terminal and self.count.done != self._printed and \
                    time.perf_counter() - self.count.t0 >= self.interval:
                self._print_line(force=True)  # a long evaluation ends with its last count
            self._on_end()
            self.count = None

    def _on_begin(self) -> None: ...

    def _on_advance(self) -> None: ...

    def _on_end(self) -> None: ...


class Progress(_Observer):
    """optimize's live status table on a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool, total: int, usage_fn: UsageFn | None = None, *,
                 console: Any = None, interval: float | None = None) -> None:
        super().__init__(enabled, usage_fn, console, interval)
        self.total = total
        self.status: dict[str, Any] = {"step": 0, "phase": "starting"}
        self.rows: list[tuple[str, ...]] = []
        self.live: Any = None
        if self.terminal:
            from rich.live import Live

            # the renderable is this object: each refresh redraws clock, count and spend
            self.live = Live(self, console=self.console, refresh_per_second=4,
                             transient=False)
            self.live.start()

    @staticmethod
    def _num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    def _usage_cells(self) -> tuple[str, str, str]:
        live = self.usage()
        return usage_cells(live if live is not None else self.status.get("usage"))

    def __rich__(self) -> Any:
        return self._table()

    def _table(self, status: bool = True) -> Any:
        from rich.table import Table

        table = Table(title="tracegrad optimize", title_justify="left", expand=False)
        for col in ("step", "train", "val", "best", "result", "calls", "tokens", "$", "elapsed"):
            table.add_column(col, justify="right" if col not in ("result",) else "left")
        for row in self.rows[-8:]:
            table.add_row(*row)
        if not status:
            return table
        calls, tok, usd = self._usage_cells()
        s, c = self.status, self.count
        phase = c.text() if c is not None else s.get("phase", "")
        table.add_row(
            f"{s.get('step', 0)}/{self.total}", self._num(s.get("train")),
            self._num(s.get("val")), self._num(s.get("best")), f"[dim]{phase}[/dim]",
            calls, tok, usd, _duration(time.perf_counter() - self.t0),
        )
        return table

    def begin(self, label: str, total: int) -> None:
        step = self.status.get("step", 0)
        where = f"step {step}/{self.total}: " if step else "baseline: "
        super().begin(f"{where}{label}", total)

    def update(self, **kw: Any) -> None:
        if not self.enabled:
            return
        self.status.update({k: scrub_text(v) if isinstance(v, str) else v
                            for k, v in kw.items()})
        if self.live is not None:
            self.live.refresh()

    def step_done(self, rec: dict[str, Any]) -> None:
        if not self.enabled or self.console is None:
            return
        self.status["usage"] = rec.get("usage_total")
        calls, tok, usd = usage_cells(rec.get("usage_total"))
        result = scrub_text(str(rec.get("result", "")))
        row = (
            f"{rec['step']}/{self.total}", self._num(rec.get("train_score")),
            self._num(rec.get("val_score")), self._num(rec.get("best_score")), result,
            calls, tok, usd, _duration(time.perf_counter() - self.t0),
        )
        self.rows.append(row)
        if self.live is not None:
            self.live.refresh()
        else:
            self.console.print(
                f"step {row[0]}  train {row[1]}  val {row[2]}  best {row[3]}  {result}  "
                f"calls {calls}  tokens {tok}  {usd}  {row[8]}",
                markup=False,
                soft_wrap=True,
            )

    def message(self, text: str) -> None:
        if self.enabled and self.console is not None:
            console = self.live.console if self.live is not None else self.console
            console.print(scrub_text(text), markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.count = None
            self.live.update(self._table(status=False))
            self.live.stop()
            self.live = None


class EvalProgress(_Observer):
    """``evaluate``'s progress bar on a terminal, a periodic status line otherwise."""

    def __init__(self, enabled: bool, usage_fn: UsageFn | None = None, *, console: Any = None,
                 interval: float | None = None) -> None:
        super().__init__(enabled, usage_fn, console, interval)
        self.bar: Any = None
        self.task: Any = None

    def _on_begin(self) -> None:
        if not self.terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        owner = self

        class _Spend(TextColumn):  # read at each redraw: the spend moves between examples
            def render(self, task: Any) -> Any:
                from rich.text import Text

                return Text(owner.usage_text(), style="dim")

        assert self.count is not None
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("ETA"), TimeRemainingColumn(), _Spend(""),
                       console=self.console, refresh_per_second=4, transient=False)
        self.task = self.bar.add_task(self.count.label, total=self.count.total)
        self.bar.start()

    def _on_advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def _on_end(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def eval_progress(progress: Any, usage_fn: UsageFn | None) -> Any:
    """``evaluate(progress=...)``: True for the display, False for none, or an observer."""
    if progress is True:
        return EvalProgress(True, usage_fn)
    if not progress:
        return None
    return progress
