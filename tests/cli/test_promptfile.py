"""The prompt-file format: parsing, every validation error with its file and line, the
module it builds, and writing back (front matter byte for byte, atomic, .bak kept)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import tracegrad as tg
from tracegrad.promptfile import PromptFile, PromptFileError, atomic_write
from tracegrad.testing import MockLLM
from tracegrad.train.data import load_dataset

from .conftest import PROMPTS

GOOD = """\
---
# a comment that must survive
model: openai:gpt-4o-mini
input:
  question: the question to answer
  context: background text
output: answer
metric: exact_match
constraints:
  - Answer with one word.
system: You are terse.
params:
  temperature: 0
---
Use the context.

Context: {{ context }}
Question: {{ question }}
"""


def write(tmp_path: Path, text: str, name: str = "p.prompt") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def error_of(tmp_path: Path, text: str) -> PromptFileError:
    p = write(tmp_path, text)
    with pytest.raises(PromptFileError) as info:
        PromptFile.load(p)
    assert info.value.path == str(p)
    return info.value


def test_parse_reads_every_key(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, GOOD))
    assert pf.model == "openai:gpt-4o-mini"
    assert pf.inputs == {"question": "the question to answer", "context": "background text"}
    assert pf.output == "answer"
    assert pf.metric == "exact_match"
    assert pf.constraints == ["Answer with one word."]
    assert pf.system == "You are terse."
    assert pf.params == {"temperature": 0}
    assert pf.fields == {"question", "context"}
    assert pf.body.startswith("Use the context.")
    assert pf.body_line == 15


def test_input_as_list_and_default_metric(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, "---\ninput: [q]\noutput: a\n---\n{{ q }}\n"))
    assert pf.inputs == {"q": ""}
    assert pf.metric == "exact_match"
    assert pf.model is None


def test_ready_prompt_files_load_and_match_their_data() -> None:
    names = sorted(p.name for p in PROMPTS.glob("*.prompt"))
    assert len(names) >= 3
    metrics = set()
    for name in names:
        pf = PromptFile.load(PROMPTS / name)
        stem = name[: -len(".prompt")]
        train = pf.load_dataset(PROMPTS / f"{stem}.train.jsonl")
        val = pf.load_dataset(PROMPTS / f"{stem}.val.jsonl")
        pf.check_metric(train)
        assert len(train) >= 20 and len(val) >= 15, name
        assert not pf.warnings
        metrics.add(pf.metric)
    assert "json_field_match" in metrics


# -- errors name the file and the line ------------------------------------------------------


def test_missing_front_matter(tmp_path: Path) -> None:
    e = error_of(tmp_path, "Answer: {{ q }}\n")
    assert e.line == 1 and "must start with a line '---'" in str(e)
    assert str(e).startswith(f"{tmp_path / 'p.prompt'}:1: ")


def test_unclosed_front_matter(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\n{{ q }}\n")
    assert e.line == 1 and "never closed" in str(e)


def test_bad_yaml_reports_the_file_line(tmp_path: Path) -> None:
    # line 4 of the file is the third line of YAML
    e = error_of(tmp_path, "---\nmodel: m\ninput: [q]\noutput: : a\n---\n{{ q }}\n")
    assert e.line == 4
    assert "invalid YAML" in e.message


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\nmetrc: exact_match\n---\n{{ q }}\n")
    assert e.line == 4
    assert "unknown key 'metrc'" in e.message and "did you mean 'metric'" in e.message


def test_duplicate_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\noutput: b\n---\n{{ q }}\n")
    assert e.line == 4 and "twice" in e.message


def test_missing_required_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\n---\n{{ q }}\n")
    assert "missing key 'output'" in e.message and e.line == 3


@pytest.mark.parametrize(
    ("yaml_text", "line", "words"),
    [
        ("input: 3\noutput: a", 2, "'input' must be a list"),
        ("input: [q]\noutput: [a]", 3, "'output' must be the name"),
        ("input: [q]\noutput: a\nconstraints:\n  - ok\n  - 7", 6, "'constraints' entries"),
        ("input: [q]\noutput: a\nparams: [1]", 4, "'params' must be a mapping"),
        ("input: [q]\noutput: a\nmodel: 5", 4, "'model' must be a non-empty string"),
        ("input: [q]\noutput: a\nmetric: {judge: 3}", 4, "{judge: RUBRIC}"),
        ("input: [q]\noutput: a\nmetric: 'regex:('", 4, "invalid regular expression"),
        ("input: [q, q]\noutput: a", 2, "twice"),
        ("input: [q]\noutput: q", 3, "is also an input"),
        # one name instead of a list: the error points at the key (it once crashed with
        # AttributeError, reading a character of the name as its YAML node)
        ("input: not a name\noutput: a", 2, "'input' entries must be field names"),
        ("output: a\ninput: 'q-1'", 3, "'input' entries must be field names"),
    ],
)
def test_wrong_types(tmp_path: Path, yaml_text: str, line: int, words: str) -> None:
    e = error_of(tmp_path, f"---\n{yaml_text}\n---\n{{{{ q }}}}\n")
    assert words in e.message
    assert e.line == line


def test_template_syntax_error_line_is_the_file_line(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\n---\nline one\n{% if q %}\n{{ q }\n")
    assert e.line == 7  # the body starts on line 5; the error is on its third line
    assert "template syntax error" in e.message


def test_template_field_not_declared(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [question]\noutput: a\n---\nHi.\n\n{{ qustion }}\n")
    assert e.line == 7
    assert "'qustion'" in e.message and "not declared in 'input'" in e.message
    assert "did you mean 'question'" in e.message


def test_template_reading_the_answer_is_refused(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\n---\n{{ q }}\n{{ a }}\n")
    assert e.line == 6 and "show the model the answer" in e.message


def test_empty_template(tmp_path: Path) -> None:
    e = error_of(tmp_path, "---\ninput: [q]\noutput: a\n---\n\n")
    assert e.line == 5 and "empty" in e.message


def test_unused_input_is_a_warning(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, "---\ninput: [q, extra]\noutput: a\n---\n{{ q }}\n"))
    assert any("extra" in w for w in pf.warnings)


# -- datasets -------------------------------------------------------------------------------


def test_dataset_lacking_a_template_field(tmp_path: Path) -> None:
    p = write(tmp_path, "---\ninput: [question]\noutput: answer\n---\nQ:\n{{ question }}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "x", "answer": "1"}\n{"questoin": "y", "answer": "2"}\n')
    with pytest.raises(PromptFileError) as info:
        PromptFile.load(p).load_dataset(data)
    e = info.value
    assert e.path == str(p) and e.line == 6  # the template line that reads the field
    assert f"{data}:2" in e.message and "did you mean 'questoin'" in e.message


def test_dataset_lacking_the_output_field(tmp_path: Path) -> None:
    p = write(tmp_path, "---\ninput: [q]\noutput: answer\n---\n{{ q }}\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "x", "answer": "1"}\n{"q": "y", "label": "2"}\n')
    with pytest.raises(PromptFileError) as info:
        PromptFile.load(p).load_dataset(data)
    assert info.value.line == 3 and f"{data}:2" in info.value.message


def test_check_dataset_on_rows_in_memory(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, "---\ninput: [q]\noutput: a\n---\n\n{{ q }}\n"))
    pf.check_dataset([{"q": 1, "a": 2}])
    with pytest.raises(PromptFileError) as info:
        pf.check_dataset([{"q": 1, "a": 2}, {"x": 1, "a": 2}], "rows.jsonl")
    assert info.value.line == 6 and "row 2 of rows.jsonl" in info.value.message
    ds = load_dataset([{"q": 1, "a": 2}], output_field="a")
    pf.check_dataset(ds)


def test_metric_that_cannot_read_the_expected_values(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, "---\ninput: [q]\noutput: a\nmetric: numeric\n---\n{{ q }}\n"))
    with pytest.raises(PromptFileError) as info:
        pf.check_metric([{"q": "x", "a": "seven"}], "d.jsonl")
    assert info.value.line == 4 and "holds no number" in info.value.message


def test_unknown_metric_name(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, "---\ninput: [q]\noutput: a\nmetric: exakt\n---\n{{ q }}\n"))
    with pytest.raises(PromptFileError) as info:
        pf.metric_fn()
    assert info.value.line == 4 and "unknown metric" in info.value.message


# -- the module ----------------------------------------------------------------------------


def test_to_module_renders_the_template_and_traces_the_parameter(tmp_path: Path) -> None:
    pf = PromptFile.load(write(tmp_path, GOOD))
    engine = MockLLM(["Paris"])
    program = pf.to_module(engine)
    out = program(question="Capital of France?", context="Europe", answer="ignored")
    assert out.value == "Paris"
    sent = engine.requests[0].messages
    assert sent[0] == {"role": "system", "content": "You are terse."}
    assert "Context: Europe\nQuestion: Capital of France?" in sent[1]["content"]
    assert engine.requests[0].params == {"temperature": 0}
    (param,) = program.parameters()
    assert param is program.prompt
    assert param.value_kind == "template" and param.constraints == ["Answer with one word."]
    assert param in tg.parameters_of(out)
    assert program.state_dict() == {"prompt": pf.body}


# -- writing back ----------------------------------------------------------------------------


def test_write_keeps_front_matter_bytes_and_a_backup(tmp_path: Path) -> None:
    text = GOOD.replace("\n", "\r\n")  # CRLF and comments must survive as they are
    p = write(tmp_path, text)
    pf = PromptFile.load(p)
    new_body = "Be brief.\r\nContext: {{ context }}\r\nQuestion: {{ question }}\r\n"
    assert pf.write(None, new_body) == p
    raw = p.read_bytes()
    assert raw.startswith(pf.prefix.encode("utf-8"))
    assert raw == (pf.prefix + new_body).encode("utf-8")
    assert (tmp_path / "p.prompt.bak").read_bytes() == text.encode("utf-8")
    assert PromptFile.load(p).body == new_body
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []


def test_write_elsewhere_leaves_the_original(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    pf = PromptFile.load(p)
    out = tmp_path / "out.prompt"
    pf.write(out, "New.\n{{ context }} {{ question }}\n")
    assert p.read_text() == GOOD and not (tmp_path / "p.prompt.bak").exists()
    assert not (tmp_path / "out.prompt.bak").exists()
    assert PromptFile.load(out).body == "New.\n{{ context }} {{ question }}\n"


def test_write_refuses_a_body_that_drops_a_field(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    pf = PromptFile.load(p)
    with pytest.raises(PromptFileError, match="drops context"):
        pf.write(None, "Question: {{ question }}\n")
    assert p.read_text() == GOOD and not (tmp_path / "p.prompt.bak").exists()


def test_write_scrubs_secrets_from_the_new_template_only(tmp_path: Path) -> None:
    """A template that quotes a key (a model echoing the Authorization header) never reaches
    the file; the front matter and the .bak stay the user's bytes."""
    from tracegrad.redaction import remember

    key = "sk-promptfile-ECHO-0123456789"
    remember(key)
    p = write(tmp_path, GOOD)
    pf = PromptFile.load(p)
    pf.write(None, f"Use the context (Authorization: Bearer {key}).\n"
                   "{{ context }} {{ question }}\n")
    text = p.read_text(encoding="utf-8")
    assert key not in text and "(Authorization: Bearer [REDACTED])" in text
    assert text.startswith(pf.prefix) and p.with_name("p.prompt.bak").read_text() == GOOD
    assert key not in pf.render_text(f"{key} {{{{ context }}}} {{{{ question }}}}")


def test_atomic_write_keeps_permissions_and_cleans_up_on_failure(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    p = tmp_path / "f.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    atomic_write(p, "new")
    assert p.read_text() == "new" and (p.stat().st_mode & 0o777) == 0o640

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(p, "newer")
    assert p.read_text() == "new"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["f.txt"]


def test_json_expected_values_load_for_the_extraction_prompt() -> None:
    pf = PromptFile.load(PROMPTS / "invoice_extraction.prompt")
    ds = pf.load_dataset(PROMPTS / "invoice_extraction.val.jsonl")
    metric = pf.metric_fn()
    ex = ds[0]
    score, _ = metric(json.dumps(ex.expected), ex.expected)
    assert score == 1.0
    wrong = {"name": ex.expected["name"], "date": "1999-01-01", "amount": 0}
    half, why = metric(json.dumps(wrong), ex.expected)
    assert 0 < half < 1 and "date" in why


def test_demos_written_into_the_front_matter_read_back_the_same_and_nothing_else_moves():
    text = ("---\ninput: [question]  # the field\noutput: answer\ndemos: 2\n"
            "params:\n  temperature: 0\n---\nQ: {{ question }}\n")
    pf = PromptFile.parse(text)
    demos = [{"input": "Q: two\nlines", "output": "A1"}, {"input": "x: 'y'  ", "output": "#2"}]
    out = pf.render_text({"prompt": pf.body}, demos)
    assert out.startswith("---\ninput: [question]  # the field\noutput: answer\ndemos:\n")
    assert out.endswith("params:\n  temperature: 0\n---\nQ: {{ question }}\n")
    again = PromptFile.parse(out)
    assert again.demos == demos and again.demos_max == 2
    assert again.render_text({"prompt": again.body}, demos) == out
    assert pf.render_text({"prompt": pf.body}) == text  # no demos given: byte for byte
