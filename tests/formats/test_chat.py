"""Chat-shaped tracegrad prompt files: role markers make messages, ``trainable`` picks
the ones the optimizer rewrites, and the program sends and records those messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracegrad.formats.chat import ChatProgram, split_markers
from tracegrad.llm.mock import MockLLM
from tracegrad.promptfile import PromptFile, PromptFileError, PromptFileErrors, PromptProgram

CHAT = """---
input:
  question: the question
  topic: what it is about
output: answer
trainable: [system, assistant]
---
system:
You answer questions about {{ topic }}.

user:
What is 2 + 2?

assistant:
4

# user:
{{ question }}
"""


def test_role_markers_make_messages_and_trainable_picks_them() -> None:
    pf = PromptFile.parse(CHAT, "chat.prompt")
    assert pf.format == "tracegrad" and pf.chat is not None
    assert [(p.name, p.line, p.trainable) for p in pf.chat.messages_pieces] == [
        ("system", 9, True), ("user", 12, False), ("assistant", 15, True), ("user_2", 18, False)]
    assert pf.fields == {"question", "topic"}
    msgs = pf.chat.render({"question": "And 3 + 3?", "topic": "sums"})
    assert msgs == [{"role": "system", "content": "You answer questions about sums."},
                    {"role": "user", "content": "What is 2 + 2?"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "And 3 + 3?"}]


def test_the_program_has_one_parameter_per_trainable_message() -> None:
    pf = PromptFile.parse(CHAT, "chat.prompt")
    engine = MockLLM(default="6")
    program = pf.to_module(engine)
    assert isinstance(program, ChatProgram)
    assert dict(program.named_parameters()).keys() == {"system", "assistant"}
    out = program({"question": "And 3 + 3?", "topic": "sums", "answer": "6"})
    assert out.value == "6"
    assert engine.requests[0].messages[0] == {"role": "system",
                                              "content": "You answer questions about sums."}
    assert set(out.op.inputs) == {"system", "assistant", "question", "topic"}
    program.system.value = "Answer briefly about {{ topic }}."
    program({"question": "q", "topic": "t"})
    assert engine.requests[1].messages[0]["content"] == "Answer briefly about t."


def test_a_file_without_markers_is_one_template_as_before() -> None:
    pf = PromptFile.parse("---\ninput: [q]\noutput: a\n---\nQ: {{ q }}\n", "p.prompt")
    assert pf.chat is None and isinstance(pf.to_module(MockLLM()), PromptProgram)
    with pytest.raises(PromptFileError, match="no role markers"):
        PromptFile.parse("---\ninput: [q]\noutput: a\ntrainable: system\n---\n{{ q }}\n",
                         "p.prompt")


def test_write_back_of_two_messages_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "chat.prompt"
    path.write_text(CHAT)
    pf = PromptFile.load(path)
    pf.write(None, {"system": "Be exact about {{ topic }}.", "assistant": "2 + 2 = 4"})
    assert path.read_text() == CHAT.replace("You answer questions about {{ topic }}.",
                                            "Be exact about {{ topic }}.").replace(
        "\n4\n", "\n2 + 2 = 4\n")
    with pytest.raises(PromptFileError, match="role marker"):
        pf.write(None, {"system": "Hi {{ topic }}\nuser:\nmore", "assistant": "4"})
    with pytest.raises(PromptFileError, match="drops topic"):
        pf.write(None, {"system": "Hi", "assistant": "4"})


def test_all_errors_are_reported_together() -> None:
    text = ("---\ninput: [question]\noutput: answer\nmetric: regex:(\nmodel: 5\n"
            "trainable: [system, 9]\nsystem: also here\n---\nsystem:\n{% if %}\nuser:\n"
            "{{ question }} {{ answer }} {{ other }}\n")
    with pytest.raises(PromptFileErrors) as e:
        PromptFile.parse(text, "bad.prompt")
    found = [(err.line, err.message[:30]) for err in e.value.errors]
    assert [n for n, _ in found] == [4, 5, 7, 10]
    text = text.replace("system: also here\n", "")
    with pytest.raises(PromptFileErrors) as e:
        PromptFile.parse(text, "bad.prompt")
    assert [err.line for err in e.value.errors] == [4, 5, 6, 9]


def test_marker_forms_as_prompty_reads_them() -> None:
    body = "intro\n# System:\nA\n  user[name=\"Al\"]  :\nB\nassistant :\n\nC\n"
    chat = split_markers(body, 0, 1, attrs=True)
    assert [(p.role, p.text, p.attrs) for p in chat.pieces] == [
        ("system", "intro", {}), ("system", "A", {}), ("user", "B", {"name": "Al"}),
        ("assistant", "C", {})]


def test_the_optimizer_refuses_a_rewrite_that_adds_a_message() -> None:
    from tracegrad.optim.constraints import check

    pf = PromptFile.parse(CHAT, "chat.prompt")
    param = pf.piece_parameter(pf.chat.trainable[0])
    assert check(param, "Be exact about {{ topic }}.")[1] == []
    problems = check(param, "Be exact about {{ topic }}.\nuser:\nHi")[1]
    assert problems and "role-marker line" in problems[0]
