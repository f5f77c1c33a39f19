"""examples/pipeline.py runs offline, and its improvement comes from feedback that flows
backwards through the Python op to the prompt of the step that caused the problem."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .conftest import REPO


def load_example():
    spec = importlib.util.spec_from_file_location("tg_example_pipeline",
                                                  REPO / "examples" / "pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_example_improves_both_prompts(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ex = load_example()
    result = ex.main(["--run-dir", str(tmp_path / "run"), "--steps", "4"])
    assert result.baseline_score == 0.0 and result.best_score > result.baseline_score
    # the op's exception became feedback for the extraction prompt, the wrong counts for
    # the counting prompt: each prompt received the instruction for its own problem
    assert ex.EXTRACT_FIX in result.best_state["extract_prompt"]
    assert ex.COUNT_FIX in result.best_state["count_prompt"]
    assert ex.COUNT_FIX not in result.best_state["extract_prompt"]
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "validation score: 0.00 -> " in out
    assert (tmp_path / "run" / "history.jsonl").is_file()


def test_parse_items_error_names_the_bad_line() -> None:
    ex = load_example()
    import tracegrad as tg

    listing = tg.Variable("2 x piano\n- a violin", role="list")
    with pytest.raises(tg.ExecutionError) as info:
        ex.parse_items(listing)
    assert "'- a violin'" in str(info.value)
    assert ex.parse_items(tg.Variable("2 x Piano\n1 x violin")).value == "2 x piano\n1 x violin"
