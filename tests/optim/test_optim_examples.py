"""The optimizer examples run offline, exit 0 and visibly improve what they optimize."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_all(names: list[str]) -> dict[str, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    procs = {
        n: subprocess.Popen([sys.executable, str(EXAMPLES / n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=EXAMPLES.parent)
        for n in names
    }
    out = {}
    for n, p in procs.items():
        stdout, stderr = p.communicate(timeout=90)
        out[n] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def test_examples_run_offline_and_improve():
    runs = run_all(["solution_optimization.py", "code_optimization.py", "numeric.py"])
    for name, r in runs.items():
        assert r.returncode == 0, f"{name} failed:\n{r.stdout}\n{r.stderr}"
        assert "offline: scripted MockLLM" in r.stdout

    sol = runs["solution_optimization.py"].stdout
    before, after = sol.split("before:\n")[1].split("\n\n")[0], sol.split("after:\n")[1]
    assert "102 cents" in before and "92 cents" in after and "398" not in after
    assert "No change needed." in sol

    code = runs["code_optimization.py"].stdout
    assert "before (accuracy 0.00)" in code and "after (accuracy 1.00)" in code
    after_code = code.split("after (accuracy 1.00):\n")[1]
    assert "return raw.strip()\n" not in after_code and ".title()" in after_code

    num = runs["numeric.py"].stdout
    errors = [float(x) for x in re.findall(r"mean_error=([\d.]+)", num)]
    assert len(errors) == 2 and errors[1] < errors[0] / 5


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_tg_example_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["solution_optimization.py", "code_optimization.py", "numeric.py"])
def test_model_flag_uses_tracegrad_llm(name, monkeypatch, capsys):
    """--model/--base-url build the engine with tracegrad.llm.LLM (here replaced by the mock)."""
    import tracegrad.llm

    module = load(name)
    seen = []

    def fake_llm(spec, base_url=None, **kw):
        seen.append((spec, base_url))
        return module.mock_llm()

    monkeypatch.setattr(tracegrad.llm, "LLM", fake_llm, raising=False)
    monkeypatch.setattr(sys, "argv", [name, "--model", "openai:some-model",
                                      "--base-url", "http://127.0.0.1:9/v1", "--steps", "2"])
    assert module.main() == 0
    out = capsys.readouterr().out
    assert seen == [("openai:some-model", "http://127.0.0.1:9/v1")]
    assert "offline" not in out and "before" in out and "after" in out
