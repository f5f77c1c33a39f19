"""The run's terminal display: a live status table on stderr, or one line per step.

The only module of the library besides the CLI that uses ``rich`` (imported when a
run starts, so ``import tracegrad`` stays fast); results go to stdout, never here. Text
that may come from a model or a server (a step's result, a message) is scrubbed of
secrets first (:mod:`tracegrad.redaction`).
"""

from __future__ import annotations

import time
from typing import Any

from ..redaction import scrub_text

__all__ = ["Progress"]


class Progress:
    """A live status table on stderr when it is a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.t0 = time.perf_counter()
        self.status: dict[str, Any] = {"step": 0, "phase": "starting"}
        self.rows: list[tuple[str, ...]] = []
        self.console: Any = None
        self.live: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True, highlight=False)
        if self.console.is_terminal:
            self.live = Live(
                self._table(), console=self.console, refresh_per_second=4, transient=False
            )
            self.live.start()

    @staticmethod
    def _num(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    def _usage_cells(self) -> tuple[str, str, str]:
        u = self.status.get("usage") or {}
        t = u.get("total") or {}
        if not u.get("metered"):
            return "-", "-", "-"
        tok = t.get("total_tokens", 0)
        tok_s = f"{tok / 1000:.1f}k" if tok >= 1000 else str(tok)
        return str(t.get("calls", 0)), tok_s, f"${t.get('usd', 0.0):.4f}"

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
        s = self.status
        table.add_row(
            f"{s.get('step', 0)}/{self.total}",
            self._num(s.get("train")),
            self._num(s.get("val")),
            self._num(s.get("best")),
            f"[dim]{s.get('phase', '')}[/dim]",
            calls,
            tok,
            usd,
            f"{time.perf_counter() - self.t0:.1f}s",
        )
        return table

    def update(self, **kw: Any) -> None:
        if not self.enabled:
            return
        self.status.update({k: scrub_text(v) if isinstance(v, str) else v
                            for k, v in kw.items()})
        if self.live is not None:
            self.live.update(self._table())

    def step_done(self, rec: dict[str, Any]) -> None:
        if not self.enabled or self.console is None:
            return
        self.status["usage"] = rec.get("usage_total")
        calls, tok, usd = self._usage_cells()
        result = scrub_text(str(rec.get("result", "")))
        row = (
            f"{rec['step']}/{self.total}",
            self._num(rec.get("train_score")),
            self._num(rec.get("val_score")),
            self._num(rec.get("best_score")),
            result,
            calls,
            tok,
            usd,
            f"{time.perf_counter() - self.t0:.1f}s",
        )
        self.rows.append(row)
        if self.live is not None:
            self.live.update(self._table())
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
            self.live.update(self._table(status=False))
            self.live.stop()
            self.live = None

