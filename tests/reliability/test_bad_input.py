"""Bad input into every parser yields a value or a typed tracegrad error that names the file
and line -- never a crash; huge input is refused clearly or shortened with a marker, in
bounded memory.

Parsers: dataset files (JSONL, CSV, JSON), prompt files (YAML front matter + template), and
what an LLM replies: backward feedback, metrics on model answers, judge replies, and
templates proposed by the optimizer. (The optimizers' own reply parsing is fuzzed in
tests/optim/test_optim_fuzz.py.)
"""

from __future__ import annotations

import json
import math
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracegrad as tg
from tracegrad.promptfile import PromptFile, PromptFileError
from tracegrad.testing import MockLLM
from tracegrad.train import DatasetError, load_dataset, optimize
from tracegrad.train import metrics as M

from .reliability_harness import (
    MODEL,
    cli_env,
    copy_counting,
    has_traceback,
    optimize_args,
    run_cli,
    world_server,
)

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["question", "answer", "id", "x", ""]) | st.text(max_size=6),
                      inner, max_size=4),
    max_leaves=10,
)
# text with the characters that break naive line handling: U+2028/9, NEL, CR, NUL, BOM
tricky_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(
    ["\u2028", "\u2029", "\x85", "\r", "\x00", "\ufeff", "\x0b", "\x0c", "\x1c", '"', "\\"]),
    max_size=40)


def _assert_dataset_error(e: DatasetError, path: Path, n_lines: int) -> None:
    assert e.file == str(path)
    assert str(e).startswith(str(path))
    if e.line is not None:
        assert 1 <= e.line <= max(n_lines, 1) + 1, (e.line, n_lines, str(e))


# -- datasets -------------------------------------------------------------------------------


@FUZZ
@given(lines=st.lists(st.one_of(json_values.map(json.dumps), tricky_text), max_size=6))
def test_any_jsonl_file_loads_or_names_its_bad_line(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", newline="")
    try:
        ds = load_dataset(path)
    except DatasetError as e:
        _assert_dataset_error(e, path, len(lines))
    else:
        assert len(ds) >= 1 and all(isinstance(x.inputs, dict) for x in ds)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"question": tricky_text, "answer": tricky_text}),
                     min_size=1, max_size=5),
       ascii_only=st.booleans(), crlf=st.booleans())
def test_valid_jsonl_always_round_trips(tmp_path: Path, rows, ascii_only: bool,
                                        crlf: bool) -> None:
    """Whatever the strings hold (U+2028, NEL, quotes...), a file json.dumps wrote loads
    back to the same rows, whichever line ending."""
    path = tmp_path / "d.jsonl"
    nl = "\r\n" if crlf else "\n"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=ascii_only) + nl for r in rows)
                     .encode("utf-8"))
    ds = load_dataset(path, output_field="answer")
    assert [x.inputs["question"] for x in ds] == [r["question"] for r in rows]
    assert [x.expected for x in ds] == [r["answer"] for r in rows]
    assert all(x.source.endswith(f":{i}") for i, x in enumerate(ds, 1))  # line numbers hold


@FUZZ
@given(text=st.text(max_size=300))
def test_any_csv_loads_or_names_its_bad_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        load_dataset(path)
    except DatasetError as e:
        _assert_dataset_error(e, path, text.count("\n") + text.count("\r") + 1)


@FUZZ
@given(value=st.one_of(json_values.map(json.dumps), st.text(max_size=80).map(lambda s: "[" + s)))
def test_any_json_list_loads_or_names_its_bad_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(value, encoding="utf-8")
    try:
        load_dataset(path)
    except DatasetError as e:
        _assert_dataset_error(e, path, value.count("\n") + 1)


@pytest.mark.parametrize("suffix,content,line,words", [
    (".jsonl", '{"question": "a", "answer": 1}\n{"question": ' + "[" * 50_000 + "\n", 2,
     "nested too deeply"),
    (".json", '[{"question": "a", "answer": 1},\n' + "[" * 50_000, 2, "nested too deeply"),
    (".jsonl", '{"question": "a", "answer": 1}\n{"question": ' + "7" * 5000 + ', "answer": 1}\n',
     2, "digits"),
    (".jsonl", '{"question": "a", "answer": 1}\n\x00{"question": "b"}\n', 2, "invalid JSON"),
    (".csv", "question,answer\nfine,1\n" + "x" * 200_000 + ",2\n", 3, "field limit"),
])
def test_hostile_dataset_rows_are_refused_with_file_and_line(tmp_path: Path, suffix: str,
                                                             content: str, line: int,
                                                             words: str) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert info.value.line == line and words in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_a_json_list_on_one_line_is_optimized_and_evaluated(tmp_path: Path) -> None:
    # issue 12 s5: every element starts on line 1, so ids derived from line numbers
    # collided and the CLI refused a valid file with "duplicate id 'NAME.json:1'"
    task = copy_counting(tmp_path / "task", dataset_format="json-one-line")
    assert "\n" not in task["train"].read_text() and task["val"].suffix == ".json"
    env = cli_env(tmp_path)
    with world_server() as (server, _):
        run = run_cli(optimize_args(task, server.url, tmp_path / "run", "--json", steps=1), env)
        scored = run_cli(["eval", task["prompt"], "--data", task["val"], "--model", MODEL,
                          "--base-url", server.url, "--json"], env)
    assert run.code == 0 and run.exception is None, run
    assert json.loads(run.stdout)["stopped_reason"] in ("steps", "perfect")
    assert scored.code == 0 and scored.exception is None, scored
    ids = [r["id"] for r in json.loads(scored.stdout)["results"]]
    assert ids == [f"object_counting.val.json:1#{i}" for i in range(1, 6)]


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "a", "answer": 1}\n{"question": "\xff\xfe", "answer": 2}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: not valid UTF-8"):
        load_dataset(path)


# -- prompt files -------------------------------------------------------------------------------

VALID = """---
model: openai:gpt-4o-mini
input:
  question: the question
output: answer
metric: numeric
constraints:
  - Keep it short.
params:
  temperature: 0
---
Answer the question.

{{ question }}
"""


@FUZZ
@given(at=st.integers(min_value=0, max_value=14),
       junk=st.one_of(st.text(max_size=60), st.sampled_from([
           "  - [", "{{", "{% if %}", "input: [a, b]", ": :", "*alias", "&a [*a]",
           "!!python/object/apply:os.system ['true']", "metric: regex:(", "output: question",
           "params: {model: x}", "\t", "---", "\ufeff", "{{ question.__class__ }}",
           "{{ question * 99999999999 }}", "metric: {judge: ''}", "input: []",
       ])))
def test_any_prompt_file_loads_or_names_file_and_line(tmp_path: Path, at: int, junk: str) -> None:
    lines = VALID.split("\n")
    lines.insert(at, junk)
    text = "\n".join(lines)
    path = tmp_path / "p.prompt"
    path.write_text(text, encoding="utf-8")
    try:
        pf = PromptFile.load(path)
    except PromptFileError as e:
        assert e.path == str(path) and str(e).startswith(str(path))
        if e.line is not None:
            assert 1 <= e.line <= text.count("\n") + 2, (e.line, str(e))
    else:
        assert pf.fields <= set(pf.inputs) and pf.output not in pf.fields


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_prompt_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "p.prompt"
    path.write_bytes(b"---\ninput: [question]\noutput: answer\n" + data)
    try:
        PromptFile.load(path)
    except PromptFileError as e:
        assert e.path == str(path)


def _laughs(depth: int) -> str:
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, depth):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines)


@pytest.mark.parametrize("front,words", [
    ("input: " + "[" * 1100 + "]" * 1100 + "\noutput: answer", "nested too deeply"),
    ("input: [question]\noutput: answer\nparams:\n" + _laughs(9), "aliases"),
    ("input: !!python/object/apply:os.system ['true']\noutput: answer", "invalid YAML"),
])
def test_hostile_front_matter_is_refused_quickly(tmp_path: Path, front: str,
                                                 words: str) -> None:
    import time

    path = tmp_path / "p.prompt"
    path.write_text(f"---\n{front}\n---\n{{{{ question }}}}\n")
    t0 = time.perf_counter()
    with pytest.raises(PromptFileError) as info:
        PromptFile.load(path)
    assert time.perf_counter() - t0 < 5
    assert words in str(info.value) and str(info.value).startswith(f"{path}:")


def test_cli_refuses_a_billion_laughs_prompt_file(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    text = task["prompt"].read_text().replace("params:\n  temperature: 0",
                                              "params:\n  extra:\n" + _laughs(9).replace(
                                                  "  a", "    a"))
    task["prompt"].write_text(text)
    r = run_cli(["estimate", task["prompt"], "--train", task["train"]], cli_env(tmp_path))
    assert r.code == 2 and "aliases" in r.stderr and not has_traceback(r.output), r


# -- LLM replies ----------------------------------------------------------------------------------

replies = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["system", "`system`", "input", "SYSTEM", "x", ""]),
                    json_values, max_size=3).map(json.dumps),
    st.sampled_from(["```json\n{\"system\": \"be brief\"}\n```", '{"system": null}',
                     '{"system": ["a", 1]}', "{" * 5000, '{"system": "' + "x" * 100_000 + '"}',
                     "no change needed", "\x00", "1e999"]),
)


@FUZZ
@given(first=replies, second=replies)
def test_any_backward_reply_gives_feedback_or_a_recorded_fallback(first: str,
                                                                  second: str) -> None:
    engine = MockLLM([first, second])
    system = tg.Parameter("Answer.", role="system prompt")
    out = tg.LLMCall(MockLLM(default="7"), system=system)("How many?")
    res = out.backward("Wrong: expected 3, got 7.", propagator=tg.TextualPropagator(engine))
    assert engine.calls <= 2  # one reply, at most one repair
    events = [e.get("event") for e in res.events]
    for g in system.grads:
        assert isinstance(g.text, str)
    if "backward_fallback" in events:
        # the model failed twice: the output's feedback is passed on, and it says so
        assert any("expected 3" in g.text for g in system.grads)
    else:
        # usable feedback arrived -- or the model said, in so many words, to change nothing
        said_nothing = any(re.search(r"(?i)no change needed|\bnone\b|n/a", r)
                           for r in (first, second))
        assert system.grads or said_nothing, (first, second, events)


numbers = st.one_of(
    st.from_regex(r"-?\d{1,400}(\.\d{1,20})?([eE][-+]?\d{1,4})?", fullmatch=True),
    st.sampled_from(["1e999", "-1e999", "nan", "inf", "1,234,567", "\u22123", "0x1F", "1e-999"]),
)
predictions = st.one_of(st.text(max_size=80), numbers,
                        st.tuples(st.text(max_size=10), numbers, st.text(max_size=10))
                        .map("".join), json_values.map(json.dumps),
                        st.dictionaries(st.text(max_size=5), numbers, max_size=3).map(json.dumps))

METRICS = {
    "exact_match": ("exact_match", "3"),
    "contains": ("contains", "3"),
    "token_f1": ("token_f1", "three apples"),
    "numeric": ("numeric", "3"),
    "numeric-tolerance": ("numeric:0.5", "3"),
    "regex": ("regex:^\\s*3\\s*$", "3"),
    "json_field_match": ("json_field_match", {"a": 3, "b": "x"}),
}


@pytest.mark.parametrize("name", sorted(METRICS))
@FUZZ
@given(prediction=predictions)
def test_every_metric_scores_any_model_answer(name: str, prediction: str) -> None:
    """A metric that raises on a model's answer stops the whole run (trainer: "the metric
    failed"), so built-in metrics must score anything a model can say."""
    spec, expected = METRICS[name]
    score, why = M.get_metric(spec)(prediction, expected)
    assert isinstance(score, float | int) and 0.0 <= score <= 1.0 and not math.isnan(score)
    assert isinstance(why, str) and why


@FUZZ
@given(reply=st.one_of(predictions, st.tuples(st.sampled_from(["Score: ", "score=", "", "**"]),
                                               numbers, st.sampled_from(["/10", "", " out of 10"]))
                       .map("".join)))
def test_judge_scores_any_reply_between_0_and_1(reply: str) -> None:
    judge = M.llm_judge("Is it right?", engine=MockLLM(default=reply))
    score, why = judge("answer", "3")
    assert 0.0 <= score <= 1.0 and not math.isnan(score) and isinstance(why, str)


@pytest.mark.parametrize("proposal", [
    "Answer.\n{{ question.__class__.__mro__ }}\n{{ question }}",
    "Answer.\n{{ cycler.__init__.__globals__.os.environ }}\n{{ question }}",
    "Answer.\n{{ question['__class__'] }}{{ question }}",
])
def test_an_optimizer_proposal_that_escapes_the_template_sandbox_is_never_applied(
        proposal: str) -> None:
    p = tg.Parameter("Answer.\n{{ question }}", value_kind="template", name="prompt")
    p.add_feedback("be more specific")
    engine = MockLLM(default=f"<new_value>\n{proposal}\n</new_value>")
    res = tg.TGD([p], engine=engine).step()
    assert p.value == "Answer.\n{{ question }}" and not res.updated
    assert "sandbox" in json.dumps(res.events), res.events


# -- huge inputs ----------------------------------------------------------------------------------


def _scripted(req) -> str:
    if req.purpose == "forward":
        return "2"
    if req.purpose == "backward":
        body = req.messages[-1]["content"].split("## Inputs to give feedback on")[-1]
        keys = re.findall(r"^- `([^`]+)`", body, re.M)
        return json.dumps({k: "Tell the model to reply with the number only." for k in keys})
    return ("<new_value>\nReply with the number only.\n\n{{ question }}\n</new_value>"
            '<value name="prompt">\nReply with the number only.\n\n{{ question }}\n</value>')


def _sizes(engine: MockLLM) -> dict[str, list[tuple[int, bool]]]:
    out: dict[str, list[tuple[int, bool]]] = {}
    for r in engine.requests:
        text = "".join(str(m.get("content")) for m in r.messages)
        out.setdefault(r.purpose, []).append((len(text), "characters omitted" in text))
    return out


def test_a_10mb_dataset_row_is_loaded_and_optimized_in_bounded_memory(tmp_path: Path) -> None:
    task = copy_counting(tmp_path / "task")
    rows = [json.loads(x) for x in task["train"].read_text().splitlines()]
    rows[0]["question"] = "I have " + "a cat, " * 1_450_000 + "and a dog. How many animals?"
    task["train"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    size = task["train"].stat().st_size
    assert size > 10_000_000
    pf = PromptFile.load(task["prompt"])
    tracemalloc.start()
    try:
        train = pf.load_dataset(task["train"])
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        engine = MockLLM(_scripted)
        res = optimize(pf.to_module(engine), train, pf.load_dataset(task["val"]),
                       metric=pf.metric_fn(), steps=2, batch_size=8, engine=engine,
                       run_dir=tmp_path / "run", progress=False, concurrency=2)
        run_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.steps_done == 2
    assert load_peak < 6 * size, load_peak
    assert run_peak < 6 * size, run_peak  # the row is sent as is, but never copied around
    sizes = _sizes(engine)
    assert max(n for n, _ in sizes["forward"]) > size * 0.9  # the user's data, unshortened
    assert sizes.get("backward") and all(n < 20_000 for n, _ in sizes["backward"])
    assert any(cut for _, cut in sizes["backward"])  # shortened with a visible marker
    assert all(n < 20_000 for n, _ in sizes.get("optimizer", []))
    for f in (tmp_path / "run").iterdir():
        assert f.stat().st_size < 100_000, f.name


@pytest.mark.parametrize("optimizer", ["tgd", "trace", "opro"])
def test_a_100k_character_prompt_is_optimized_with_bounded_requests(tmp_path: Path,
                                                                    optimizer: str) -> None:
    task = copy_counting(tmp_path / "task")
    filler = "Count every object carefully before answering. " * 2200
    text = task["prompt"].read_text().replace("Answer the following question.",
                                              "Answer the following question. " + filler)
    task["prompt"].write_text(text)
    body = PromptFile.load(task["prompt"]).body
    assert len(body) > 100_000
    pf = PromptFile.load(task["prompt"])
    engine = MockLLM(_scripted)
    tracemalloc.start()
    try:
        res = optimize(pf.to_module(engine), pf.load_dataset(task["train"]),
                       pf.load_dataset(task["val"]), metric=pf.metric_fn(), optimizer=optimizer,
                       steps=3, batch_size=3, engine=engine, run_dir=tmp_path / "run",
                       progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.steps_done >= 1
    assert peak < 60 * len(body), peak
    sizes = _sizes(engine)
    if optimizer == "tgd":
        assert all(n < 20_000 for n, _ in sizes["backward"])
        assert any(cut for _, cut in sizes["backward"])  # the prompt, shortened with a marker
    opt = sizes.get("optimizer", [])
    assert opt
    # the optimizer may need the whole value to rewrite it, but not more: the request does
    # not grow with the history of earlier values or with the batch
    assert all(n < 1.5 * len(body) + 20_000 for n, _ in opt), [n for n, _ in opt]
    if optimizer == "opro":
        assert any(cut for _, cut in opt)
