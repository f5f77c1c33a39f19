"""The run's terminal display prints no secret: a step's result and a message may quote
model or server text (issue 12)."""

from __future__ import annotations

import pytest

from tracegrad.redaction import remember
from tracegrad.train.progress import Progress

KEY = "sk-progress-ECHO-0123456789"


def test_step_lines_and_messages_are_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    remember(KEY)
    p = Progress(True, 2)
    p.update(phase=f"proposing ({KEY})")
    p.step_done({"step": 1, "train_score": 0.5, "val_score": 0.5, "best_score": 0.5,
                 "result": f"rejected: echoed {KEY}"})
    p.message(f"budget reached: server said Authorization: Bearer {KEY}")
    p.close()
    err = capsys.readouterr().err
    assert "step 1/2" in err and "rejected: echoed [REDACTED]" in err
    assert "Authorization: Bearer [REDACTED]" in err
    assert KEY not in err and KEY not in str(p.status)
