"""Templates the sandbox would refuse are bad input: one line, exit 2, nothing written, no
run directory -- whether the sandbox sees it statically or only on the dataset's first row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from tracegrad.cli import app; sys.exit(app())"

BODIES = [
    "{{ word|attr('__class__') }}",
    "{{ '{0.__class__}'.format(word) }}",
    "{% include 'x.txt' %}{{ word }}",
    "{% extends 'x.txt' %}{{ word }}",
    "{% import 'x.txt' as m %}{{ word }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(word) }}",
    "{{ word * 1000000000 }}",
    "{{ range(100000)|join(word * 100000) }}",
    "{{ 9 ** 9999999 }}",
    "{{ d.update({}) }}{{ word }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ word }}{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("body", BODIES)
def test_hostile_template_is_an_input_error(tmp_path: Path, body: str) -> None:
    prompt = tmp_path / "p.prompt"
    text = f"---\nmodel: openai:gpt-4o-mini\ninput: [word]\noutput: answer\n---\nFirst letter?\n{body}\n"
    prompt.write_text(text)
    (tmp_path / "d.jsonl").write_text('{"word": "apple", "answer": "a"}\n')
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT),
           "TRACEGRAD_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", CLI, "optimize", str(prompt), "--train", "d.jsonl",
                        "--steps", "1", "--base-url", "http://127.0.0.1:9/v1"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {prompt}:7: "), r.stderr
    assert "sandbox" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "p.prompt"]
    assert prompt.read_text() == text
