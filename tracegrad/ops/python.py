"""``@tg.op``: any Python function joins the graph.

The function's source and docstring describe it to backward. An exception inside does
not vanish: it becomes an error variable whose value names the failing line, raised to
the caller inside :class:`ExecutionError`, and ``err.variable.backward()`` turns it into
feedback. With ``trainable=True`` the function's source is a Parameter; a rewritten
source runs only in the sandboxed subprocess (``tracegrad.sandbox``).
"""

from __future__ import annotations

import functools
import inspect
import textwrap
import traceback
import types
from collections.abc import Callable
from typing import Any

from ..core.shorten import shorten
from ..core.variable import Feedback, Parameter, Variable
from ..sandbox import Limits, SandboxError, SandboxUnavailable, check_json_arguments, run_function
from .base import Op, as_variable, carry, record


class ExecutionError(Exception):
    """A traced function raised. ``variable`` is the error node; call ``backward()`` on it."""

    def __init__(self, variable: Variable, message: str) -> None:
        super().__init__(message)
        self.variable = variable


class PythonOp(Op):
    kind = "python"

    def __init__(self, name: str, inputs: dict[str, Variable], source: str, doc: str) -> None:
        super().__init__(name, inputs, doc)
        self.source = source

    def context(self, out: Variable, limit: int = 600) -> dict[str, Any]:
        ctx = super().context(out, limit)
        ctx["source"] = shorten(self.source, 1500)
        return ctx

    def backward(self, out: Variable, ctx: Any = None) -> None:
        context = self.context(out)
        for key, var in self.inputs.items():
            if not var.requires_grad:
                continue
            for g in out.grads:
                text = g.text
                if key != "__code__":
                    text = (
                        f"{g.text}\n(This input '{key}' went into the function {self.name}; "
                        f"its output was: {shorten(out.value, 300)})"
                    )
                    # bounded: through a chain of n functions the notes would otherwise
                    # grow at every hop, n^2 characters stored in all (the first words,
                    # the verdict, and the last hops, nearest the input, are what is kept)
                    text = shorten(text, FEEDBACK_LIMIT)
                var.add_feedback(Feedback(text, source=out.name, context=carry(g, context)))


FEEDBACK_LIMIT = 3000  # characters of feedback one input of a function keeps


def _source_of(fn: Callable[..., Any]) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return f"def {fn.__name__}(...):  # source not available"
    lines = src.splitlines()
    while lines and lines[0].lstrip().startswith("@"):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def _failing_line(exc: BaseException, fn: Callable[..., Any]) -> tuple[int | None, str]:
    code = getattr(fn, "__code__", None)
    line, text = None, ""
    for fr in traceback.extract_tb(exc.__traceback__):
        if code is not None and fr.filename == code.co_filename:
            line, text = fr.lineno, fr.line or ""
    return line, text


class TracedFunction:
    """What ``@tg.op`` returns: call it like the function; it records a graph node."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        trainable: bool = False,
        name: str | None = None,
        role: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or fn.__name__
        self.role = role or f"output of {self.name}"
        self.signature = inspect.signature(fn)
        self.original_source = _source_of(fn)
        self.limits = limits or Limits()
        self._arguments_checked = False
        self.code: Parameter | None = None
        if trainable:
            self.code = Parameter(
                self.original_source,
                role=f"source code of the Python function {self.name}",
                name=f"{self.name}.__code__",
                value_kind="code",
            )
            self.code.function_name = fn.__name__  # type: ignore[attr-defined]
            self.code.signature = str(self.signature)  # type: ignore[attr-defined]

    def parameters(self) -> list[Parameter]:
        return [self.code] if self.code is not None and self.code.requires_grad else []

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        """``@tg.op`` on a method: ``obj.method(x)`` passes ``obj`` as ``self``, as a plain
        ``def`` would (without this, the instance was never passed and the call failed).
        ``self`` is an argument like any other, not a graph input."""
        if obj is None:
            return self
        if self.code is not None:
            raise TypeError(
                f"@tg.op(trainable=True) cannot decorate the method {self.name}: a rewritten "
                "function runs in a sandboxed subprocess, which cannot receive `self`; make "
                "it a module-level function of JSON-able arguments")
        return types.MethodType(self, obj)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.code is None or self.code.value == self.original_source:
            return self.fn(*args, **kwargs)
        return run_function(self.code.text, self.fn.__name__, args, kwargs, self.limits)

    def __call__(self, *args: Any, **kwargs: Any) -> Variable:
        bound = self.signature.bind(*args, **kwargs)
        inputs: dict[str, Variable] = {}
        for k, v in bound.arguments.items():
            if isinstance(v, Variable):
                inputs[k] = v
        raw_args = tuple(v.value if isinstance(v, Variable) else v for v in bound.args)
        raw_kwargs = {k: v.value if isinstance(v, Variable) else v for k, v in bound.kwargs.items()}
        if self.code is not None:
            inputs["__code__"] = self.code
            if not self._arguments_checked:
                check_json_arguments(self.name, raw_args, raw_kwargs)
                self._arguments_checked = True
        op = PythonOp(self.name, inputs, self.code.text if self.code else self.original_source,
                      (self.fn.__doc__ or "").strip())
        try:
            value = self._run(raw_args, raw_kwargs)
        except SandboxUnavailable:
            raise  # a setup problem for the user, not feedback for the optimizer
        except SandboxError as e:
            self._raise(op, e.describe(), None, "")  # describe() already names the line
        except Exception as e:  # noqa: BLE001 - any user exception becomes feedback
            line, text = _failing_line(e, self.fn)
            self._raise(op, f"{type(e).__name__}: {e}", line, text)
        if isinstance(value, Variable):
            value = value.value
        return record(Variable(value, role=self.role), op)

    def _raise(self, op: PythonOp, message: str, line: int | None, code: str) -> None:
        where = f" at line {line}: `{code.strip()}`" if line else ""
        text = f"The function {self.name} raised {message}{where}"
        err = Variable(text, role=f"error raised by {self.name}")
        err.error = message
        err.is_objective = True
        record(err, op)
        raise ExecutionError(err, text)


def op(
    fn: Callable[..., Any] | None = None,
    *,
    trainable: bool = False,
    name: str | None = None,
    role: str | None = None,
    limits: Limits | None = None,
) -> Any:
    """Decorator: ``@tg.op`` or ``@tg.op(trainable=True)``."""

    def wrap(f: Callable[..., Any]) -> TracedFunction:
        return TracedFunction(f, trainable=trainable, name=name, role=role, limits=limits)

    return wrap(fn) if fn is not None else wrap


__all__ = ["ExecutionError", "PythonOp", "TracedFunction", "op", "as_variable"]
