"""The package root: lazy imports (issue 15, start-up) without losing a public name."""

from __future__ import annotations

import json
import subprocess
import sys

import tracegrad as tg

HEAVY = ("pydantic", "jinja2", "openai", "asyncio", "networkx", "rich", "typer")


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.splitlines()[-1])


def test_import_tracegrad_loads_no_heavy_dependency() -> None:
    loaded = _modules_after("import tracegrad")
    assert [m for m in HEAVY if m in loaded] == []
    assert [m for m in loaded if m.startswith("tracegrad.")] == []


def test_cli_help_does_not_load_the_library() -> None:
    """`tracegrad --help` needs typer, not the optimizers, pydantic or the OpenAI SDK."""
    loaded = _modules_after(
        "import sys\nsys.argv = ['tracegrad', '--help']\nimport tracegrad_launch\n"
        "try:\n    tracegrad_launch.main()\nexcept SystemExit:\n    pass")
    assert "typer" in loaded
    assert [m for m in ("openai", "jinja2", "tracegrad.optim", "tracegrad.train",
                        "tracegrad.promptfile") if m in loaded] == []


def test_every_public_name_resolves() -> None:
    missing = [n for n in tg.__all__ if not hasattr(tg, n)]
    assert missing == []
    assert set(tg.__all__) <= set(dir(tg))


def test_backward_stays_the_function_after_its_package_is_imported() -> None:
    """Importing a submodule sets it on the parent; tg.backward must still be callable."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import tracegrad.backward, tracegrad as tg; "
         "import tracegrad.backward.textual; print(callable(tg.backward), tg.sum.__name__)"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["True", "sum"]
    assert callable(tg.backward) and tg.backward.__module__.startswith("tracegrad.backward")


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        tg.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("tg.NoSuchThing did not raise")


def test_the_type_checking_imports_name_exactly_the_lazy_exports() -> None:
    """The package lists its names twice (lazily for Python, eagerly for type checkers):
    the two lists must not drift apart."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(tg.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING")
    typed = {a.asname or a.name for n in block.body if isinstance(n, ast.ImportFrom)
             for a in n.names}
    assert typed == set(tg._EXPORTS)
