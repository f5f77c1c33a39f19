from __future__ import annotations

import json

import pytest

from tracegrad.train import Dataset, DatasetError, Example, load_dataset


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_infers_fields_and_records_source(tmp_path):
    p = write(
        tmp_path / "d.jsonl",
        '{"question": "q1", "answer": "a1"}\n\n{"question": "q2", "answer": "a2", "id": "x"}\n',
    )
    ds = load_dataset(p)
    assert len(ds) == 2
    assert ds.output_field == "answer" and ds.input_fields == ["question"]
    assert ds[0] == Example({"question": "q1"}, "a1", "d.jsonl:1", f"{p}:1")
    assert ds[1].id == "x" and ds[1].source == f"{p}:3"  # blank line 2 skipped, numbering kept
    assert len(ds.sha256) == 64 and ds.describe()["size"] == 2


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ('{"q": "a", "answer": 1}\n{"q": "b", "answer": 2\n', 2, "invalid JSON"),
        ('{"q": "a", "answer": 1}\n{"q": "b"}\n', 2, "missing output field 'answer'"),
        ('{"q": "a", "answer": 1}\n["q", "answer"]\n', 2, "must be an object, got a list"),
        ('{"q": "a", "answer": 1}\n{"answer": 3}\n', 2, "missing input field 'q'"),
        (
            '{"q": "a", "answer": 1}\n{"q": "b", "answer": 2}\n\n{"q": "c", "answer": null}\n',
            4,
            "missing output field",
        ),
        ('{"q": "a"}\n', 1, "no output field"),
    ],
)
def test_jsonl_bad_rows_name_file_line_reason(tmp_path, text, line, reason):
    p = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(DatasetError) as ei:
        load_dataset(p)
    assert ei.value.line == line
    assert reason in ei.value.reason
    assert f"{p}:{line}" in str(ei.value)


def test_explicit_fields(tmp_path):
    p = write(
        tmp_path / "d.jsonl", '{"a": 1, "b": 2, "gold": 3, "noise": 0}\n{"a": 1, "gold": 3}\n'
    )
    with pytest.raises(DatasetError, match=r"d.jsonl:2: missing input field 'b'"):
        load_dataset(p, input_fields=["a", "b"], output_field="gold")
    ds = load_dataset(p, input_fields=["a"], output_field="gold")
    assert ds[1].inputs == {"a": 1} and ds[1].expected == 3


def test_csv_line_numbers_count_multiline_fields(tmp_path):
    p = write(tmp_path / "d.csv", 'question,expected\n"two\nlines",1\nplain,2\nshort\n')
    with pytest.raises(DatasetError) as ei:
        load_dataset(p)
    assert ei.value.line == 5 and "missing output field 'expected'" in ei.value.reason
    p2 = write(tmp_path / "ok.csv", '\ufeffquestion,expected\n"two\nlines",1\nplain,2\n')
    ds = load_dataset(p2)
    assert [e.expected for e in ds] == ["1", "2"]
    assert ds[0].inputs == {"question": "two\nlines"} and ds[1].source.endswith("ok.csv:4")


def test_csv_too_many_values(tmp_path):
    p = write(tmp_path / "d.csv", "question,answer\na,b\nc,d,e\n")
    with pytest.raises(DatasetError, match=r"d.csv:3: 3 values but the header has 2 columns"):
        load_dataset(p)


def test_json_list_keeps_element_lines(tmp_path):
    p = write(
        tmp_path / "d.json",
        '[\n  {"question": "a", "answer": 1},\n  {"question": "b",\n   "answer": 2},\n  "oops"\n]\n',
    )
    with pytest.raises(DatasetError) as ei:
        load_dataset(p)
    assert ei.value.line == 5 and "got a string" in ei.value.reason
    p2 = write(
        tmp_path / "ok.json",
        json.dumps([{"question": "a", "answer": 1}, {"question": "b", "answer": 2}], indent=1),
    )
    ds = load_dataset(p2)
    assert [e.source.rsplit(":", 1)[1] for e in ds] == ["2", "6"]
    bad = write(tmp_path / "broken.json", '[{"question": "a", "answer": 1},\n {"question": }]')
    with pytest.raises(DatasetError) as ei:
        load_dataset(bad)
    assert ei.value.line == 2


def test_json_list_on_one_line_gets_an_id_per_element(tmp_path):
    # every element starts on line 1: ids from line numbers alone collided ("duplicate id")
    rows = [{"word": "apple", "answer": "a"}, {"word": "pear", "answer": "p"},
            {"word": "fig", "answer": "f"}]
    ds = load_dataset(write(tmp_path / "one.json", json.dumps(rows)))
    assert [e.id for e in ds] == ["one.json:1#1", "one.json:1#2", "one.json:1#3"]
    assert [e.inputs["word"] for e in ds] == ["apple", "pear", "fig"]
    assert {e.source for e in ds} == {f"{tmp_path / 'one.json'}:1"}  # still the file line
    assert {ex.id: ex for ex in ds}["one.json:1#2"].expected == "p"


def test_json_list_ids_keep_line_numbers_unless_a_line_is_shared(tmp_path):
    text = '[{"q": "a", "answer": 1},\n {"q": "b", "answer": 2}, {"q": "c", "answer": 3},\n' \
           ' {"q": "d", "answer": 4, "id": "mine"}]'
    ds = load_dataset(write(tmp_path / "mix.json", text))
    assert [e.id for e in ds] == ["mix.json:1", "mix.json:2#1", "mix.json:2#2", "mine"]


def test_in_memory_rows_and_examples():
    ds = load_dataset([{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"}])
    assert isinstance(ds, Dataset) and ds[1].id == "row:2" and ds[1].source == "<memory>:2"
    with pytest.raises(DatasetError, match=r"<memory>:2: missing output field"):
        load_dataset([{"question": "q", "answer": "a"}, {"question": "r"}])
    exs = [Example({"x": 1}, 2, "e1"), Example({"x": 2}, 4, "e2")]
    assert list(load_dataset(exs)) == exs
    assert load_dataset(ds) is ds


def test_duplicate_ids_and_empty(tmp_path):
    p = write(
        tmp_path / "d.jsonl", '{"id": 1, "q": "a", "answer": 1}\n{"id": 1, "q": "b", "answer": 2}\n'
    )
    with pytest.raises(DatasetError, match=r"d.jsonl:2: duplicate id '1'"):
        load_dataset(p)
    with pytest.raises(DatasetError, match="no examples"):
        load_dataset(write(tmp_path / "e.jsonl", "\n"))
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")
