"""The README's agents snippet runs offline and prints what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Agents: tools, chat, structured output, streaming"


def _snippet() -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split(SECTION, 1)[1]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_readme_agent_snippet_runs_offline(tmp_path):
    script = tmp_path / "agents.py"
    script.write_text(_snippet())
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Three apples cost $1.50."
    assert any(re.fullmatch(r'lookup_price1 = lookup_price\(call=agent1, arguments=\{"item": '
                            r'"apple"\}\)  # .*', line) for line in lines)
    assert "    -> 1.5" in lines
    assert lines[-4:] == ["1", "1.5 1.5", "['one', ' two', ' three']", "a red square"]
