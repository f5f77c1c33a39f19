"""The layer rules, checked on module-level imports so a forbidden import fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tracegrad"

# Known exceptions still to be removed (none today).
ALLOWED: set[tuple[str, str]] = set()


def _imports(path: Path, root: Path = PKG) -> set[str]:
    """Absolute names of modules imported at module level (not inside functions)."""
    rel = path.relative_to(root.parent).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _violations(layer: str, forbidden: list[str], root: Path = PKG) -> list[str]:
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        rel = str(path.relative_to(root))
        for mod in _imports(path, root):
            for f in forbidden:
                if (mod == f or mod.startswith(f + ".")) and not any(rel == r and mod.startswith(m) for r, m in ALLOWED):
                    bad.append(f"{rel} imports {mod}")
    return bad


def test_core_imports_no_higher_layer() -> None:
    higher = ["llm", "ops", "backward", "optim", "train", "testing", "cli"]
    assert _violations("core", [f"tracegrad.{m}" for m in higher]) == []


def test_backward_imports_nothing_from_optim_or_train() -> None:
    assert _violations("backward", ["tracegrad.optim", "tracegrad.train"]) == []


def test_checker_sees_relative_imports(tmp_path: Path) -> None:
    """Guards the checker itself: a relative import of optim from backward is caught."""
    root = tmp_path / "tracegrad"
    (root / "backward").mkdir(parents=True)
    (root / "backward" / "probe.py").write_text("from ..optim.base import is_positive\n")
    assert sorted(_violations("backward", ["tracegrad.optim"], root)) == [
        "backward/probe.py imports tracegrad.optim.base",
        "backward/probe.py imports tracegrad.optim.base.is_positive",
    ]


def test_production_code_imports_no_test_tools() -> None:
    """``model="mock"`` is served by tracegrad.llm.mock; tracegrad.testing is for tests only."""
    bad = []
    for layer in ("core", "llm", "ops", "backward", "optim", "train"):
        for path in sorted((PKG / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
                if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.split(".")[0] == "testing" and node.level
                    or node.module.startswith("tracegrad.testing")
                ):
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert bad == []


def _all_imports(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a file, function bodies included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def _importers(package: str) -> set[str]:
    return {
        str(p.relative_to(PKG))
        for p in sorted(PKG.rglob("*.py"))
        if package in _all_imports(p)
    }


def test_third_party_clients_stay_in_their_module() -> None:
    """The OpenAI SDK behind one engine, OpenTelemetry behind one module; the terminal UI
    behind the CLI and the progress table."""
    assert _importers("openai") <= {"llm/openai.py"}
    assert _importers("opentelemetry") <= {"tracing.py"}  # the optional otel extra
    cli = {str(p.relative_to(PKG)) for p in (PKG / "cli").glob("*.py")}
    assert _importers("typer") <= cli
    assert _importers("rich") <= cli | {"train/progress.py"}


def test_formats_import_no_optimizer_trainer_or_cli() -> None:
    """Reading a prompt file never needs the training machinery (issue 16)."""
    forbidden = ["tracegrad.optim", "tracegrad.train", "tracegrad.cli", "tracegrad.backward"]
    assert _violations("formats", forbidden) == []
