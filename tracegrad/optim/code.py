"""Static checks on LLM-written Python before it may replace a trainable function.

A rewrite is only ever run in the sandboxed subprocess (``tracegrad.sandbox``), so these
checks are not the security boundary. They exist so that a rewrite which cannot work --
it does not parse, renames the function, changes how callers pass arguments, or reaches
for modules a pure function has no business importing -- is caught while the optimizer
can still be asked for a repair, instead of failing one example at a time later.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

ALLOWED_IMPORTS: frozenset[str] = frozenset({
    "math", "re", "json", "itertools", "functools", "collections", "string", "statistics",
    "datetime", "fractions", "decimal", "heapq", "bisect", "typing", "dataclasses", "operator",
})

# Builtins whose only use in a pure function is to escape it.
_FORBIDDEN_NAMES = frozenset({
    "__import__", "eval", "exec", "compile", "open", "breakpoint", "input", "globals",
    "locals", "vars", "__builtins__",
})
# Attribute names that lead from any object to the interpreter's internals.
_FORBIDDEN_ATTRS = frozenset({
    "__class__", "__bases__", "__base__", "__mro__", "__subclasses__", "__globals__",
    "__builtins__", "__code__", "__closure__", "__dict__", "__getattribute__", "__import__",
    "__loader__", "__spec__", "__reduce__", "__reduce_ex__", "f_globals", "f_locals",
    "gi_frame", "tb_frame",
})

_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.S)


def strip_fences(text: str) -> str:
    """Drop one markdown fence around the whole text; models add them out of habit."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def defined_functions(source: str) -> list[str]:
    """Names of the top-level functions in ``source`` (empty when it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _find_def(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = None
    for n in tree.body:
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name:
            found = n  # the last definition wins, as at runtime
    return found


def _shape(args: ast.arguments) -> tuple[object, ...]:
    """What callers depend on: names, kinds and which parameters are optional.

    Annotations and default values are left out on purpose: ``list`` vs ``List[int]`` or
    a tuned default does not break a caller, a renamed or reordered parameter does.
    """
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    return (
        len(args.posonlyargs),
        tuple(positional),
        len(args.defaults),
        args.vararg.arg if args.vararg else None,
        tuple((a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)),
        args.kwarg.arg if args.kwarg else None,
    )


def _signature_args(signature: str) -> ast.arguments | None:
    sig = signature.strip()
    if "->" in sig:
        sig = sig[: sig.rindex("->")].strip()
    try:
        tree = ast.parse(f"def _f{sig}:\n    pass\n")
    except SyntaxError:
        return None  # e.g. a default whose repr is not Python ("<object at 0x...>")
    fn = tree.body[0]
    return fn.args if isinstance(fn, ast.FunctionDef) else None


def _show(args: ast.arguments) -> str:
    return f"({ast.unparse(args)})"


def validate_code(
    source: str,
    *,
    function_name: str | None = None,
    signature: str | None = None,
    reference: str | None = None,
    allowed_imports: Iterable[str] = ALLOWED_IMPORTS,
) -> list[str]:
    """Problems that make ``source`` unacceptable as the new body of a trainable function.

    ``signature`` is the ``str(inspect.signature(fn))`` recorded by ``@tg.op``; when it is
    missing or not parseable the signature of ``function_name`` in ``reference`` (the
    current source) is the one to keep. An empty list means the rewrite may be applied.
    """
    allowed = set(allowed_imports)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        where = f" (line {e.lineno})" if e.lineno else ""
        return [f"the code does not parse: {e.msg}{where}"]
    except ValueError as e:  # e.g. null bytes in the source
        return [f"the code does not parse: {e}"]
    problems: list[str] = []

    ref_tree: ast.Module | None = None
    if reference:
        try:
            ref_tree = ast.parse(reference)
        except (SyntaxError, ValueError):
            ref_tree = None
    if function_name is None and ref_tree is not None:
        names = [n.name for n in ref_tree.body if isinstance(n, ast.FunctionDef)]
        function_name = names[0] if names else None

    if function_name:
        fn = _find_def(tree, function_name)
        if fn is None:
            got = defined_functions(source)
            problems.append(
                f"the code must define the function `{function_name}` at top level"
                + (f" (it defines {', '.join(got)})" if got else "")
            )
        elif isinstance(fn, ast.AsyncFunctionDef):
            problems.append(f"`{function_name}` must be a plain `def`, not `async def`")
        else:
            expected = _signature_args(signature) if signature else None
            if expected is None and ref_tree is not None:
                ref_fn = _find_def(ref_tree, function_name)
                expected = ref_fn.args if ref_fn is not None else None
            if expected is not None and _shape(expected) != _shape(fn.args):
                problems.append(
                    f"`{function_name}` must keep its signature {_show(expected)} "
                    f"(same parameter names, order and optional parameters); "
                    f"the new code has {_show(fn.args)}"
                )

    bad_imports: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in allowed:
                    bad_imports.append(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                bad_imports.append("." * node.level + (node.module or ""))
            elif (node.module or "").split(".")[0] not in allowed:
                bad_imports.append(node.module or "")
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES:
            problems.append(f"`{node.id}` is not allowed (line {node.lineno})")
        elif isinstance(node, ast.Attribute) and node.attr in _FORBIDDEN_ATTRS:
            problems.append(f"the attribute `{node.attr}` is not allowed (line {node.lineno})")
    if bad_imports:
        problems.insert(
            0,
            f"imports outside the allowed modules: {', '.join(dict.fromkeys(bad_imports))} "
            f"(allowed: {', '.join(sorted(allowed))})",
        )
    return problems


__all__ = ["ALLOWED_IMPORTS", "defined_functions", "strip_fences", "validate_code"]
