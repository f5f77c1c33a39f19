"""Reading the user's input files: never hang on a FIFO or device, never parse a huge file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracegrad import fileio
from tracegrad.promptfile import PromptFile, PromptFileError
from tracegrad.train.data import DatasetError, load_dataset

ROOT = Path(__file__).resolve().parents[1]
PROMPT = ROOT / "prompts" / "object_counting.prompt"
DATA = ROOT / "prompts" / "object_counting.val.jsonl"
CLI = "import sys; from tracegrad.cli import app; sys.exit(app())"


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello\n")
    assert fileio.read_input(f) == b"hello\n"


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        start = time.monotonic()
        with pytest.raises(fileio.InputFileError):
            fileio.read_input(path)
        assert time.monotonic() - start < 1.0


def test_size_caps_and_their_environment_override(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "big.prompt"
    f.write_bytes(b"x" * (fileio.MAX_PROMPT_FILE_BYTES + 1))
    with pytest.raises(fileio.InputFileError, match="MB"):
        fileio.read_input(f, "prompt")
    assert len(fileio.read_input(f, "data")) == fileio.MAX_PROMPT_FILE_BYTES + 1
    monkeypatch.setenv("TRACEGRAD_MAX_PROMPT_FILE_MB", "10")
    assert len(fileio.read_input(f, "prompt")) == fileio.MAX_PROMPT_FILE_BYTES + 1
    monkeypatch.setenv("TRACEGRAD_MAX_DATA_FILE_MB", "0.5")
    with pytest.raises(fileio.InputFileError):
        fileio.read_input(f, "data")


def test_loaders_turn_refusals_into_their_own_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(PromptFileError, match="not a regular file"):
        PromptFile.load(fifo)
    with pytest.raises(DatasetError, match="not a regular file"):
        load_dataset(fifo)
    with pytest.raises(PromptFileError, match="no such file"):
        PromptFile.load(tmp_path / "missing.prompt")


@pytest.mark.parametrize("which", ["prompt", "data"])
def test_cli_refuses_a_fifo_or_device_with_one_line_and_exit_2(tmp_path: Path, which: str) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    prompt, data = (fifo, DATA) if which == "prompt" else (PROMPT, Path("/dev/zero"))
    r = subprocess.run([sys.executable, "-c", CLI, "eval", str(prompt), "--data",
                        str(data)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert list(tmp_path.iterdir()) == [fifo]
