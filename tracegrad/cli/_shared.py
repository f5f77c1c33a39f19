"""What every command shares: the app, one-line errors and exit codes, output, options.

Results go to stdout (one JSON object with ``--json``); progress and logs go to stderr.
Every line goes through :mod:`tracegrad.redaction` first: a model output, a diff or an
error message may quote an API key (a server that echoes the Authorization header).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

if TYPE_CHECKING:  # imported where used: `--help` must not load the library
    from ..promptfile import PromptFile

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

try:  # typer >= 0.29 vendors click; before, click's own base class
    from typer import TyperException as _UsageProblem
except ImportError:  # pragma: no cover - older typer
    from click import ClickException as _UsageProblem  # type: ignore[assignment,no-redef]


class _OneLineErrors(TyperGroup):
    """Bad options and arguments as one line ``error: ...`` and exit 2, like every other
    input error; typer would draw a box of five lines around them."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _flags_take_no_value(cmd, ctx)
        return cmd

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)
        _hide_flag_types(params)
        return params

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            # from here on Ctrl-C is a KeyboardInterrupt again: a run saves itself on it
            # (the console script handled SIGINT itself while the CLI started)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _UsageProblem as e:  # click's UsageError, BadParameter, ...
            if type(e).__name__ == "NoArgsIsHelpError":  # `tracegrad optimize` alone: help
                from typer import rich_utils

                rich_utils.rich_format_error(e)  # type: ignore[arg-type]
                sys.exit(EXIT_USAGE)
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            _err().print(f"[bold red]error:[/bold red] {_escape(_redact(message))}")
            sys.exit(getattr(e, "exit_code", EXIT_USAGE))
        except typer.Abort:
            _err().print("[bold red]error:[/bold red] interrupted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def _hide_flag_types(params: Any) -> None:
    """A flag takes no value, so help shows none: typer labels ``--json`` and ``--help``
    ``<bool>``, which reads as ``--json <bool>``."""
    for p in params:
        if getattr(p, "is_flag", False) and not getattr(p, "count", False) and not p.metavar:
            p.metavar = ""


def _flags_take_no_value(cmd: Any, ctx: Any) -> None:
    _hide_flag_types(cmd.get_params(ctx))
    for sub in getattr(cmd, "commands", {}).values():  # `tracegrad cache clear --help`
        _flags_take_no_value(sub, ctx)


app = typer.Typer(
    cls=_OneLineErrors,
    name="tracegrad",
    help="Optimize LLM prompts and pipelines with textual gradients.\n\n"
    "Start with `tracegrad demo` (offline, simulated), then `tracegrad estimate` and "
    "`tracegrad optimize` on a prompt file from prompts/.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
cache_app = typer.Typer(
    help="Inspect or clear the reply cache (a SQLite file shared by all runs).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(cache_app, name="cache")


class CLIError(Exception):
    """An expected failure: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- output ----------------------------------------------------------------------------


def _err() -> Console:
    # made per call: tests and embedders swap sys.stderr
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _log(message: str) -> None:
    _err().print(_redact(message))


def _out(text: str = "") -> None:
    sys.stdout.write(_redact(text) + "\n")
    sys.stdout.flush()


def _out_json(data: dict[str, Any]) -> None:
    from ..redaction import scrub

    # scrubbed as data first, so a secret-named field is dropped whole
    _out(json.dumps(scrub(data), ensure_ascii=False, default=str))


def _redact(text: str) -> str:
    from ..redaction import scrub_text

    return scrub_text(text)


def _fail(message: str, code: int) -> typer.Exit:
    _err().print(f"[bold red]error:[/bold red] {_escape(_redact(message))}")
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn every expected error into a one-line message and an exit code."""
    from ..llm.base import ConfigurationError, LLMError
    from ..llm.meter import BudgetExceeded
    from ..promptfile import PromptFileError, PromptFileErrors
    from ..sandbox import SandboxUnavailable
    from ..template import TemplateError
    from ..train.data import DatasetError
    from ..train.runs import RunDirError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    except CLIError as e:
        raise _fail(str(e), e.code) from None
    except PromptFileErrors as e:  # every problem of the file, one 'error: FILE:LINE:' each
        for problem in e.errors[:-1]:
            _err().print(f"[bold red]error:[/bold red] {_escape(_redact(str(problem)))}")
        raise _fail(str(e.errors[-1]), EXIT_USAGE) from None
    except (PromptFileError, DatasetError, TemplateError, RunDirError) as e:
        raise _fail(str(e), EXIT_USAGE) from None
    except ConfigurationError as e:
        raise _fail(str(e), EXIT_USAGE) from None
    except SandboxUnavailable as e:  # a machine set-up problem, said in one line
        raise _fail(str(e), EXIT_USAGE) from None
    except BudgetExceeded as e:
        raise _fail(
            f"{e} -- raise --budget-usd (see `tracegrad estimate` for the expected cost)",
            EXIT_FAILURE,
        ) from None
    except LLMError as e:
        raise _fail(f"{e} (check --base-url, --model and the server)", EXIT_FAILURE) from None
    except Exception as e:  # noqa: BLE001 - never a traceback for the user...
        if os.environ.get("TRACEGRAD_DEBUG"):
            raise  # ...unless asked for one
        raise _fail(
            f"internal error: {type(e).__name__}: {e} (set TRACEGRAD_DEBUG=1 for the traceback "
            "and report it)",
            EXIT_FAILURE,
        ) from None


# -- shared option types ------------------------------------------------------------------

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model that runs the prompt, e.g. openai:gpt-4o-mini "
                 "(default: `model` in the prompt file)."),
]
OptimizerModelOpt = Annotated[
    str | None,
    typer.Option("--optimizer-model", help="Model that writes feedback and rewrites the prompt "
                 "(default: `optimizer_model` in the file, else the model)."),
]
def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _http_url(value: str | None) -> str | None:
    """A server address the OpenAI client can use; caught here, not after 5 retries."""
    if value is None:
        return None
    u = urllib.parse.urlsplit(value.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise typer.BadParameter(f"{value!r} is not an http:// or https:// URL "
                                 "(e.g. http://localhost:8000/v1)")
    try:
        u.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise typer.BadParameter(f"{value!r} has an invalid port") from None
    return value.strip()


BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", callback=_http_url, help="OpenAI-compatible server, e.g. http://localhost:8000/v1 "
                 "(default: $OPENAI_BASE_URL or api.openai.com). The key comes from "
                 "$OPENAI_API_KEY.", envvar=None),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-j", min=1, help="Most LLM calls in flight at once (a ceiling: tracegrad starts there, halves on 429/503 and grows back while the server keeps up).")
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", metavar=" ", help="Do not read or write the reply cache.")
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar=" ", help="Print one JSON object on stdout.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, callback=_finite, help="Seconds to wait for one LLM reply before "
                        "retrying it.")
]
RetriesOpt = Annotated[
    int, typer.Option("--max-retries", min=0, help="Retries of a call after a 429, 5xx, "
                      "timeout or dropped connection (exponential backoff).")
]

BatchPollOpt = Annotated[
    float, typer.Option("--batch-poll", min=0.01, callback=_finite, help="Seconds before the "
                        "first poll of a provider batch; each wait is 1.5x longer, up to 60.")
]


def _batch_options(run_dir: Any, poll: float) -> Any:
    """Batch API options for the CLI: progress on stderr, the journal in ``run_dir``."""
    from ..llm.batch import BatchOptions

    return BatchOptions(run_dir=run_dir, poll_interval=poll, max_poll_interval=max(60.0, poll),
                        on_progress=_log)


StepsOpt = Annotated[int, typer.Option("--steps", "-n", min=1, help="Optimization steps.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Training examples per step.")
]
OptimizerOpt = Annotated[
    str,
    typer.Option("--optimizer", "-o", help="tgd (textual gradients, per prompt), tgd-batched "
                 "(the same, with one feedback call per batch instead of one per example), "
                 "trace (whole-trace, no backward calls), opro (scored history of "
                 "candidates), reflect (GEPA-class: rewrites from the failing examples "
                 "themselves beside per-example critiques, several proposals, pre-check and "
                 "merge) or reflect-lean (reflect without the critiques: no backward calls)."),
]
PromptArg = Annotated[
    Path, typer.Argument(help="The prompt file: a tracegrad .prompt file (YAML front matter + "
                         "a Jinja2 template), a Prompty .prompty file or a Dotprompt .prompt "
                         "file.", show_default=False)
]

def _optimizers() -> tuple[str, ...]:
    """The main optimizer names (tgd, tgd-batched, trace, opro, reflect)."""
    from ..optim.registry import optimizer_names

    return tuple(optimizer_names(aliases=False))


# -- loading --------------------------------------------------------------------------------


def _load_prompt(path: Path) -> PromptFile:
    from ..promptfile import PromptFile

    pf = PromptFile.load(path)
    for w in pf.warnings:
        _log(f"[yellow]warning:[/yellow] {_escape(w)}")
    return pf


def _load_data(pf: PromptFile, path: Path | None, option: str) -> Any:
    if path is None:
        return None
    if not path.exists():
        raise CLIError(f"{option} {path}: no such file")
    ds = pf.load_dataset(path)
    pf.check_metric(ds, path)
    return ds


def _resolve_models(pf: PromptFile, model: str | None, optimizer_model: str | None
                    ) -> tuple[str, str]:
    m = model or pf.model
    if not m:
        raise CLIError(f"{pf.path}: no model: add 'model: openai:gpt-4o-mini' to the front "
                       "matter or pass --model")
    om = optimizer_model or pf.optimizer_model or m
    return m, om


def _engine(spec: str, *, base_url: str | None, no_cache: bool, concurrency: int,
            meter: Any = None, call_log: Path | None = None, timeout: float = 60.0,
            max_retries: int = 4) -> Any:
    from ..llm.factory import LLM

    return LLM(spec, base_url=base_url, cache=not no_cache, max_concurrency=concurrency,
               meter=meter, call_log=call_log, timeout=timeout, max_retries=max_retries)


def _check_optimizer(name: str) -> str:
    n, names = name.strip().lower(), _optimizers()
    if n not in names:
        near = difflib.get_close_matches(n, names, n=1)
        hint = f" -- did you mean '{near[0]}'?" if near else ""
        raise CLIError(f"--optimizer {name!r} is not one of {', '.join(names)}{hint}")
    return n


def _plural(n: int, word: str) -> str:
    """"1 step", "2 steps": the CLI says what it counts the way a person would."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def _usage_totals(usage: Any) -> dict[str, Any]:
    from ..train.usage import usage_totals

    return usage_totals(usage)


def _diff(a: str, b: str, name_a: str, name_b: str) -> str:
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), name_a, name_b, lineterm="")
    return "\n".join(lines)
