"""Datasets: JSONL, CSV or a JSON list of examples, validated before anything runs.

A broken row found at step 7 of a paid run wastes the six steps before it, so the whole
file is checked up front and the first problem is reported with its file and line. Each
example remembers where it came from (``source``) so feedback and reports can point
back at the row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from ..fileio import InputFileError, read_input

__all__ = ["Dataset", "DatasetError", "Example", "OUTPUT_FIELD_NAMES", "as_dataset", "load_dataset"]

OUTPUT_FIELD_NAMES: tuple[str, ...] = ("expected", "answer", "output", "target", "label")
"""Column names tried, in order, when ``output_field`` is not given."""

_RESERVED = ("id",)


class DatasetError(ValueError):
    """A dataset that cannot be used; names the file, the line and the reason."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Example:
    inputs: dict[str, Any]
    expected: Any
    id: str
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "inputs": self.inputs,
            "expected": self.expected,
            "source": self.source,
        }


@dataclass
class Dataset(Sequence[Example]):
    """An ordered, validated list of examples plus what is needed to record it in a run."""

    examples: list[Example]
    path: str | None = None
    sha256: str = ""
    input_fields: list[str] = field(default_factory=list)
    output_field: str = ""

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, i: int) -> Example: ...

    @overload
    def __getitem__(self, i: slice) -> Dataset: ...

    def __getitem__(self, i: int | slice) -> Example | Dataset:
        if isinstance(i, slice):
            return Dataset(
                self.examples[i], self.path, self.sha256, self.input_fields, self.output_field
            )
        return self.examples[i]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def describe(self) -> dict[str, Any]:
        """What a run's config.json records about this dataset."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": len(self.examples),
            "input_fields": list(self.input_fields),
            "output_field": self.output_field,
        }


# -- loading -------------------------------------------------------------------------


def load_dataset(
    path: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Example] | Dataset,
    input_fields: Sequence[str] | None = None,
    output_field: str | None = None,
) -> Dataset:
    """Load and validate a dataset file, or validate rows already in memory.

    Files: ``.jsonl``/``.ndjson`` (one object per line), ``.csv``/``.tsv`` (header row),
    ``.json`` (a list of objects; a ``.json`` file holding one object per line is read as
    JSONL). ``output_field`` defaults to the first of :data:`OUTPUT_FIELD_NAMES` present
    in the first row; ``input_fields`` defaults to every other column except ``id``.
    """
    if isinstance(path, Dataset):
        return path
    if isinstance(path, str | os.PathLike):
        return _load_file(Path(path), input_fields, output_field)
    return _load_rows(list(path), input_fields, output_field)


def as_dataset(
    data: Any, input_fields: Sequence[str] | None = None, output_field: str | None = None
) -> Dataset:
    return load_dataset(data, input_fields, output_field)


def _load_file(path: Path, input_fields: Sequence[str] | None, output_field: str | None) -> Dataset:
    name = str(path)
    try:
        raw = read_input(path, "data")
    except InputFileError as e:
        raise DatasetError(name, None, f"cannot read the file: {e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(name, line, "not valid UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(text, name, "\t" if suffix == ".tsv" else ",")
    elif suffix == ".json" and text.lstrip().startswith("["):
        rows = _json_list_rows(text, name)
    else:
        rows = _jsonl_rows(text, name)
    ds = _build(rows, name, path.name, input_fields, output_field)
    ds.path = str(path)
    ds.sha256 = hashlib.sha256(raw).hexdigest()
    return ds


def _load_rows(
    rows: list[Any], input_fields: Sequence[str] | None, output_field: str | None
) -> Dataset:
    if rows and all(isinstance(r, Example) for r in rows):
        examples = list(rows)
        _check_unique(examples, "<memory>")
        digest = hashlib.sha256(
            json.dumps([e.to_dict() for e in examples], sort_keys=True, default=repr).encode()
        ).hexdigest()
        return Dataset(
            examples,
            None,
            digest,
            sorted({k for e in examples for k in e.inputs}),
            output_field or "",
        )
    numbered = [(i + 1, r) for i, r in enumerate(rows)]
    ds = _build(numbered, "<memory>", "row", input_fields, output_field)
    ds.sha256 = hashlib.sha256(json.dumps(rows, sort_keys=True, default=repr).encode()).hexdigest()
    return ds


def _jsonl_rows(text: str, name: str) -> list[tuple[int, Any]]:
    rows = []
    # only \n, \r\n and \r end a line: str.splitlines() also breaks at U+2028, U+0085 and
    # friends, which JSON allows raw inside strings (json.dumps(ensure_ascii=False) writes them)
    for lineno, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DatasetError(name, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting too deep
            raise DatasetError(name, lineno, f"invalid JSON: {_why(e)}") from None
    return rows


def _why(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).split(";")[0]


def _json_list_rows(text: str, name: str) -> list[tuple[int, Any]]:
    """Parse a JSON array element by element so each row keeps its own line number."""
    decoder = json.JSONDecoder()

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0) + 1  # past "["
    rows: list[tuple[int, Any]] = []
    pos = skip_ws(pos)
    if pos < len(text) and text[pos] == "]":
        return rows
    while True:
        pos = skip_ws(pos)
        if pos >= len(text):
            raise DatasetError(name, line_at(pos), "invalid JSON: the list is not closed with ']'")
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DatasetError(
                name, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})"
            ) from None
        except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting too deep
            raise DatasetError(name, line_at(pos), f"invalid JSON: {_why(e)}") from None
        rows.append((line_at(pos), value))
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            rest = text[pos + 1 :].strip()
            if rest:
                raise DatasetError(
                    name,
                    line_at(pos + 1 + text[pos + 1 :].find(rest[0])),
                    "invalid JSON: extra data after the list",
                )
            return rows
        raise DatasetError(name, line_at(pos), "invalid JSON: expected ',' or ']' between rows")


def _csv_rows(text: str, name: str, delimiter: str) -> list[tuple[int, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(name, 1, "empty file: expected a header row") from None
    except csv.Error as e:
        raise DatasetError(name, 1, f"invalid CSV: {e}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DatasetError(name, 1, "empty header row")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DatasetError(name, 1, f"duplicate column names in the header: {', '.join(dupes)}")
    rows: list[tuple[int, Any]] = []
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DatasetError(name, start, f"invalid CSV: {e}") from None
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) > len(header):
            raise DatasetError(
                name, start, f"{len(values)} values but the header has {len(header)} columns"
            )
        rows.append((start, dict(zip(header[: len(values)], values, strict=True))))
    return rows


def _build(
    rows: list[tuple[int, Any]],
    name: str,
    id_prefix: str,
    input_fields: Sequence[str] | None,
    output_field: str | None,
) -> Dataset:
    if not rows:
        raise DatasetError(name, None, "no examples in the dataset")
    first_line, first = rows[0]
    if not isinstance(first, Mapping):
        raise DatasetError(name, first_line, f"a row must be an object, got {_kind(first)}")
    out = output_field or next((k for k in OUTPUT_FIELD_NAMES if k in first), None)
    if out is None:
        raise DatasetError(
            name,
            first_line,
            f"no output field: pass output_field= (looked for {', '.join(OUTPUT_FIELD_NAMES)}; "
            f"the row has {', '.join(map(str, first)) or 'no fields'})",
        )
    explicit_inputs = input_fields is not None
    inputs = (
        list(input_fields)
        if input_fields is not None
        else [k for k in first if k != out and k not in _RESERVED]
    )
    if out in inputs:
        raise DatasetError(name, None, f"the output field {out!r} is also an input field")
    examples: list[Example] = []
    for (lineno, row), label in zip(rows, _row_labels([n for n, _ in rows]), strict=True):
        if not isinstance(row, Mapping):
            raise DatasetError(name, lineno, f"a row must be an object, got {_kind(row)}")
        if out not in row or row[out] is None:
            raise DatasetError(name, lineno, f"missing output field {out!r}")
        missing = [k for k in inputs if k not in row or row[k] is None]
        if missing:
            what = "input field" if explicit_inputs or len(missing) == 1 else "input fields"
            raise DatasetError(name, lineno, f"missing {what} {', '.join(map(repr, missing))}")
        rid = row.get("id")
        ex_id = str(rid) if rid not in (None, "") else f"{id_prefix}:{label}"
        examples.append(
            Example(
                inputs={k: row[k] for k in inputs},
                expected=row[out],
                id=ex_id,
                source=f"{name}:{lineno}",
            )
        )
    _check_unique(examples, name)
    return Dataset(examples, None, "", inputs, out)


def _row_labels(lines: list[int]) -> list[str]:
    """What a derived id says after the file name: the row's line, plus ``#K`` (its place
    on that line, from 1) when rows share a line -- a JSON list written on one line would
    otherwise give every example the same id. Ids of one-row-per-line files stay as they
    were, so run directories and reports that name them keep matching."""
    per_line = Counter(lines)
    seen: Counter[int] = Counter()
    labels = []
    for n in lines:
        seen[n] += 1
        labels.append(f"{n}#{seen[n]}" if per_line[n] > 1 else str(n))
    return labels


def _check_unique(examples: list[Example], name: str) -> None:
    seen: dict[str, str] = {}
    for ex in examples:
        if ex.id in seen:
            line = ex.source.rsplit(":", 1)[-1]
            raise DatasetError(
                name,
                int(line) if line.isdigit() else None,
                f"duplicate id {ex.id!r} (first used at {seen[ex.id]})",
            )
        seen[ex.id] = ex.source


def _kind(value: Any) -> str:
    return {
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)
