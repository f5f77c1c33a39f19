"""Public benchmark data for the real-API reproductions: fetched at run time, checked
against a SHA-256, cached; or read from a local file in the same format (tests, offline).

Splits follow the papers being reproduced:
* BBH object counting and word sorting -- TextGrad's 50 train / 100 val / 100 test, in
  file order (the file holds 250 examples).
* GSM8K -- DSPy's 200 train / 300 val from the official train set shuffled with
  ``random.Random(0)``, and the full official test set (1,319) as test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BBH = "https://raw.githubusercontent.com/suzgunmirac/BIG-Bench-Hard/main/bbh/{}.json"
_GSM = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/{}.jsonl"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str


SOURCES: dict[str, Source] = {
    "bbh/object_counting": Source(_BBH.format("object_counting"),
                                  "8acef14dbbdd40d2326ef7755750b6b5fe919fef06276af1bab3f1c297f022ff"),
    "bbh/word_sorting": Source(_BBH.format("word_sorting"),
                               "2a6132d2c99f00d0d2eb1113ac6b4a918bd969d863c48749210d969713db8d43"),
    "gsm8k/train": Source(_GSM.format("train"),
                          "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    "gsm8k/test": Source(_GSM.format("test"),
                         "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
}


class DataError(RuntimeError):
    """Data that could not be fetched, or whose checksum does not match."""


def cache_dir() -> Path:
    root = os.environ.get("TRACEGRAD_BENCH_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tracegrad", "bench-data")
    return Path(root)


def fetch(name: str, *, timeout: float = 60.0) -> bytes:
    """The verified bytes of ``name``: from the cache, else downloaded, checked and cached."""
    src = SOURCES[name]
    path = cache_dir() / (name.replace("/", "__") + Path(src.url).suffix)
    if path.exists():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == src.sha256:
            return data
    try:
        with urllib.request.urlopen(src.url, timeout=timeout) as r:  # noqa: S310 - fixed https URLs
            data = r.read()
    except OSError as e:
        raise DataError(f"cannot download {name} ({src.url}): {e}; pass --data FILE to use a "
                        "local copy") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != src.sha256:
        raise DataError(f"{name}: checksum {digest} does not match the expected {src.sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def _bbh_rows(raw: bytes) -> list[dict[str, str]]:
    doc = json.loads(raw)
    return [{"question": ex["input"], "answer": str(ex["target"])} for ex in doc["examples"]]


def _gsm_rows(raw: bytes) -> list[dict[str, str]]:
    rows = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            ex = json.loads(line)
            final = ex["answer"].split("####")[-1].strip().replace(",", "")
            rows.append({"question": ex["question"], "answer": final})
    return rows


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: str
    template: str
    published: str


TASKS: dict[str, Task] = {
    "object_counting": Task(
        "object_counting", "Answer questions that ask how many objects of some kind there are.",
        "numeric", "{{ question }}\n",
        "TextGrad: 77.8 -> 91.9 (gpt-3.5-turbo task model, gpt-4o optimizer)"),
    "word_sorting": Task(
        "word_sorting", "Sort the listed words alphabetically and reply with them separated "
        "by single spaces.", "exact_match", "{{ question }}\n", "TextGrad: see its paper"),
    "gsm8k": Task(
        "gsm8k", "Solve grade-school math word problems; the answer is a number.", "numeric",
        "{{ question }}\n", "TextGrad: 72.9 -> 81.1 (DSPy's 200/300/1,319 split)"),
}


def splits(task: str, local: list[Path] | None = None, limit: int | None = None
           ) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """(train, val, test) rows of ``task``; ``local`` files replace the download (BBH: one
    file; GSM8K: train then test). ``limit`` caps each split (smoke runs)."""
    if task in ("object_counting", "word_sorting"):
        raw = local[0].read_bytes() if local else fetch(f"bbh/{task}")
        rows = _bbh_rows(raw)
        n = len(rows)
        a, b = (50, 150) if n >= 250 else (n // 5, n // 5 + (2 * n) // 5)
        train, val, test = rows[:a], rows[a:b], rows[b:]
    elif task == "gsm8k":
        if local:
            tr, te = local[0].read_bytes(), local[-1].read_bytes()
        else:
            tr, te = fetch("gsm8k/train"), fetch("gsm8k/test")
        official = _gsm_rows(tr)
        random.Random(0).shuffle(official)
        a, b = (200, 500) if len(official) >= 500 else (len(official) // 2, len(official))
        train, val, test = official[:a], official[a:b], _gsm_rows(te)
    else:
        raise KeyError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if limit:
        train, val, test = train[:limit], val[:limit], test[:limit]
    return train, val, test


def describe() -> dict[str, Any]:
    return {k: {"url": v.url, "sha256": v.sha256} for k, v in SOURCES.items()}
