from __future__ import annotations

import os

import pytest

from tracegrad.train.runs import (
    REDACTED,
    RunDir,
    atomic_write_text,
    collect_secrets,
    scrub,
    state_hash,
)


def test_scrub_keys_shapes_and_known_secrets():
    data = {
        "api_key": "abc123xyz",
        "max_tokens": 100,
        "prompt_tokens": "not a secret",
        "text": "use sk-proj-ABCDEFGHIJKLMNOPQRST now; Bearer xyz.abc.def; task-specific",
        "nested": [{"password": "hunter2"}, "the known s3cr3t-value"],
    }
    out = scrub(data, ["s3cr3t-value"])
    assert out["api_key"] == REDACTED and out["nested"][0]["password"] == REDACTED
    assert out["max_tokens"] == 100 and out["prompt_tokens"] == "not a secret"
    assert "sk-proj" not in out["text"] and "xyz.abc.def" not in out["text"]
    assert "task-specific" in out["text"]
    assert out["nested"][1] == f"the known {REDACTED}"
    assert data["api_key"] == "abc123xyz"  # a copy


def test_collect_secrets_from_env_and_engines(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890")
    monkeypatch.setenv("HARMLESS", "value-1234567890")

    class Inner:
        def secret_values(self):
            return ["inner-secret-value"]

    class Outer:
        inner = Inner()
        api_key = "outer-api-key-1"

    found = collect_secrets(Outer())
    assert {"tok-1234567890", "inner-secret-value", "outer-api-key-1"} <= set(found)
    assert "value-1234567890" not in found


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "state.json"
    atomic_write_text(p, "old")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["state.json"]


def test_history_append_read_truncate(tmp_path):
    rd = RunDir(tmp_path / "run")
    for i in range(1, 4):
        rd.append_history({"step": i, "v": "x" * i})
    with open(rd.file("history.jsonl"), "a") as f:
        f.write('{"step": 4, "v"')  # torn
    assert [r["step"] for r in rd.read_history()] == [1, 2, 3]
    kept = rd.truncate_history(2)
    assert [r["step"] for r in kept] == [1, 2]
    assert rd.file("history.jsonl").read_text().count("\n") == 2
    assert [r["step"] for r in rd.read_history()] == [1, 2]


def test_json_only_and_stable_hash(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(TypeError, match="JSON only"):
        rd.write_json("x.json", {"a": object()})
    rd.write_json("y.json", {"nan": float("nan"), "ok": 1})
    assert rd.read_json("y.json") == {"nan": None, "ok": 1}
    assert state_hash({"a": 1, "b": "x"}) == state_hash({"b": "x", "a": 1})
    assert state_hash({"a": 1}) != state_hash({"a": 2})
