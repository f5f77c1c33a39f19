"""Which parameters a run optimizes, each under a name that is stable across processes.

The optimizer keys its memory by parameter name and a run directory records values by
name, so a resumed run must find every parameter under the same name it had.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..core.module import Module
from ..core.variable import Parameter

__all__ = ["give_task", "named_parameters", "program_task"]


def named_parameters(program: Any, parameters: Any, optimizer: Any) -> dict[str, Parameter]:
    """The program's parameters by a stable name (module path, or the name given)."""
    if parameters is not None:
        items = (
            list(parameters.items())
            if isinstance(parameters, Mapping)
            else [(p.name, p) for p in parameters]
        )
    elif isinstance(program, Module) or hasattr(program, "named_parameters"):
        items = list(program.named_parameters())
    elif hasattr(program, "parameters"):
        items = [(p.name, p) for p in program.parameters()]
    elif not isinstance(optimizer, str) and hasattr(optimizer, "params"):
        items = [(p.name, p) for p in optimizer.params]
    else:
        raise TypeError(
            "cannot find the program's parameters: use a tg.Module, or pass parameters=[...]"
        )
    named: dict[str, Parameter] = {}
    for name, p in items:
        if not isinstance(p, Parameter):
            raise TypeError(f"parameter {name!r} is not a tg.Parameter: {p!r}")
        key, i = name, 2
        while key in named and named[key] is not p:
            key, i = f"{name}#{i}", i + 1
        named[key] = p
    if not any(p.requires_grad for p in named.values()):
        raise ValueError("the program has no trainable parameter to optimize")
    for name, p in named.items():
        # Auto-generated names ("param17") differ from process to process, and the
        # optimizer keys its memory by name: a resumed run would lose that memory.
        # The module path is stable, and reads better in the optimizer's prompts.
        if p.name == f"{p.kind}{p.id}":
            p.name = name
    return named


def program_task(program: Any, metric_name: str) -> str:
    """What a program is for, from what it says about itself (empty when it says nothing)."""
    describe = getattr(program, "task_description", None)
    if callable(describe):
        text = describe()
    else:
        doc = inspect.getdoc(type(program)) if not inspect.isfunction(program) else \
            inspect.getdoc(program)
        text = "" if doc in (None, inspect.getdoc(Module)) else doc
    if text and metric_name:
        text += f"\nEach output is scored with the metric '{metric_name}'."
    return text or ""


def give_task(optimizer: Any, task: str | None, program: Any, metric_name: str) -> None:
    """Tell an optimizer the task (``"auto"``: what the program says about itself), unless
    it was built with one."""
    if task is None:
        return
    text = program_task(program, metric_name) if task == "auto" else task
    if text and callable(getattr(optimizer, "set_task", None)) and not getattr(
            optimizer, "task", ""):
        optimizer.set_task(text)
