import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_offline_and_changes_the_prompt():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
    assert lines["before"].strip() == "'Answer the question.'"
    assert lines["after"].strip() != lines["before"].strip()
    assert "count each item" in lines["after"].lower()
    assert lines["new answer"].strip() == "'4'"
