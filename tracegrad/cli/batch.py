"""``tracegrad batch status|cancel RUN_DIR``: the provider batches of a run, from its journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._shared import BaseUrlOpt, CLIError, JsonOpt, _errors, _log, _out, _out_json, app

batch_app = typer.Typer(
    help="Inspect or cancel the provider batches of an `eval --batch` or "
    "`optimize --batch-eval` run (read from RUN_DIR/batches/journal.json).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(batch_app, name="batch")

RunDirArg = Annotated[Path, typer.Argument(help="The run directory (it holds batches/).",
                                           show_default=False)]


def _journal(run_dir: Path) -> Any:
    from ..llm.batchjournal import JOURNAL_NAME, BatchJournal

    path = run_dir / "batches" / JOURNAL_NAME
    if not path.is_file():
        raise CLIError(f"{run_dir}: no batch journal ({path} does not exist); was it run with "
                       "--batch or --batch-eval?")
    try:
        return BatchJournal(run_dir)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _client(part: dict[str, Any], base_url: str | None) -> Any:
    from ..llm.openai import OpenAIEngine

    return OpenAIEngine(part["model"], base_url=base_url or part.get("base_url") or None,
                        max_retries=2)


def _live(part: dict[str, Any], base_url: str | None) -> dict[str, Any]:
    """The part as the journal has it, with the provider's current status of its batch."""
    row = {k: part.get(k) for k in ("name", "batch_id", "status", "lines", "model")}
    if part.get("batch_id") and part.get("status") == "submitted":
        engine = _client(part, base_url)
        try:
            b = engine.client.batches.retrieve(part["batch_id"])
        except Exception as e:  # noqa: BLE001 - said in one line
            raise engine.map_error(e) from None
        row["status"] = b.status
        counts = b.request_counts
        if counts is not None:
            row.update(completed=counts.completed, failed=counts.failed, total=counts.total)
    return row


@batch_app.command("status")
def status(run_dir: RunDirArg, base_url: BaseUrlOpt = None, json_output: JsonOpt = False) -> None:
    """List the run's batches: journal state, and the provider's status of open ones."""
    with _errors():
        journal = _journal(run_dir)
        rows = [_live(p, base_url) for p in journal.parts]
        if json_output:
            _out_json({"run_dir": str(run_dir), "parts": rows})
            return
        if not rows:
            _out("no batches recorded")
        for r in rows:
            done = f"  {r['completed']}/{r['total']} done, {r['failed']} failed" \
                if "total" in r else ""
            _out(f"{r['name']}  {r['batch_id'] or '-'}  {r['status']}  "
                 f"({r['lines']} requests, {r['model']}){done}")


@batch_app.command("cancel")
def cancel(run_dir: RunDirArg, base_url: BaseUrlOpt = None) -> None:
    """Cancel the run's open batches; running the command again submits anew."""
    with _errors():
        journal = _journal(run_dir)
        opened = journal.open_parts()
        for part in opened:
            if part.get("batch_id"):
                engine = _client(part, base_url)
                try:
                    b = engine.client.batches.cancel(part["batch_id"])
                except Exception as e:  # noqa: BLE001 - said in one line
                    raise engine.map_error(e) from None
                _log(f"{part['name']}: {part['batch_id']} {b.status}")
            journal.update(part, status="cancelled")
        _out(f"cancelled {len(opened)} open batch parts" if opened else "no open batches")
