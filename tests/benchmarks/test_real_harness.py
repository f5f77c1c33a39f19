"""The real-API reproduction harness (benchmarks/real/), run offline: the shipped samples are
in the published file formats, and the whole tracegrad path (estimate, eval, optimize, eval,
results line) runs through the real OpenAI client against the fake server."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(BENCH))

from real import data as real_data  # noqa: E402
from real import run as real_run  # noqa: E402

from tracegrad.testing import FakeOpenAIServer  # noqa: E402


def test_samples_parse_in_the_published_formats() -> None:
    train, val, test = real_data.splits("object_counting", [DATA / "bbh_object_counting_sample.json"])
    assert len(train) + len(val) + len(test) == 24
    assert all(r["answer"].isdigit() for r in train + val + test)
    train, val, test = real_data.splits("gsm8k", [DATA / "gsm8k_train_sample.jsonl",
                                                  DATA / "gsm8k_test_sample.jsonl"])
    assert len(test) == 12 and test[0]["answer"] == "18"  # Janet's ducks
    assert len(train) == 10 and len(val) == 10


def test_a_corrupted_download_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRACEGRAD_BENCH_DATA", str(tmp_path))
    cached = tmp_path / "bbh__object_counting.json"
    cached.write_bytes(b'{"examples": []}')

    class Fake:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b'{"examples": [{"input": "tampered", "target": "1"}]}'

    monkeypatch.setattr(real_data.urllib.request, "urlopen", lambda *a, **k: Fake())
    with pytest.raises(real_data.DataError, match="checksum"):
        real_data.fetch("bbh/object_counting")


def _reply(body: dict) -> str:
    text = "\n".join(str(m.get("content")) for m in body["messages"])
    if "## Inputs to give feedback on" in text:
        keys = re.findall(r"^- `([^`]+)`:", text.split("## Inputs to give feedback on")[-1], re.M)
        return json.dumps({k: "Tell the model to reply with only the number." for k in keys})
    if "<current_value>" in text:
        return "<new_value>\nReply with only the final number.\n\n{{ question }}\n</new_value>"
    if "Feedback items:" in text:
        return "Reply with only the number."
    return "8" if "only the final number" in text else "I think there are 8 of them."


def test_offline_smoke_run_appends_one_result_line(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    with FakeOpenAIServer(_reply) as srv:
        rc = real_run.main(["--task", "object_counting", "--frameworks", "tracegrad,textgrad",
                            "--model", "openai:gpt-4o-mini", "--optimizer-model",
                            "openai:gpt-4o-mini", "--base-url", srv.url, "--steps", "2",
                            "--data", str(DATA / "bbh_object_counting_sample.json"),
                            "--workdir", str(tmp_path / "work"), "--out", str(out), "--yes",
                            "--timeout", "120", "--peers-python",
                            str(tmp_path / "no-peers-venv" / "python")])
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["framework"] for r in lines] == ["tracegrad", "textgrad"]
    tg_line = lines[0]
    assert 0.0 <= tg_line["test_before"] <= 1.0 and 0.0 <= tg_line["test_after"] <= 1.0
    assert tg_line["split"] == [4, 9, 11] and tg_line["versions"]["python"]
    assert "no peers venv" in lines[1]["skipped"]
    assert tg_line["metric_calls"] > 0 and tg_line["llm_calls"] > 0
