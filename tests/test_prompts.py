import pytest

import tracegrad as tg


def test_builtin_prompts_load_and_overrides_win(tmp_path, monkeypatch):
    assert "JSON object" in tg.prompts.load("textual_backward")
    assert {"textual_backward", "tgd_update", "trace_update", "judge_system"} <= set(tg.prompts.names())
    custom = tmp_path / "mine.txt"
    custom.write_text("my own backward prompt")
    tg.prompts.override("textual_backward", custom)
    try:
        assert tg.prompts.load("textual_backward") == "my own backward prompt"
        custom.write_text("edited")  # an override is re-read: edits take effect
        assert tg.prompts.load("textual_backward") == "edited"
    finally:
        tg.prompts.override("textual_backward", None)
    assert "JSON object" in tg.prompts.load("textual_backward")
    monkeypatch.setenv("TRACEGRAD_PROMPT_JUDGE_SYSTEM", str(custom))
    assert tg.prompts.load("judge_system") == "edited"


def test_unknown_prompt_and_missing_override_are_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="known:"):
        tg.prompts.load("no_such_prompt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        tg.prompts.override("tgd_update", tmp_path / "missing.txt")


def test_an_override_reaches_the_backward_request(tmp_path):
    from tracegrad.testing import MockLLM

    custom = tmp_path / "bw.txt"
    custom.write_text("CUSTOM BACKWARD INSTRUCTIONS")
    engine = MockLLM(default='{"system": "shorter"}')
    tg.prompts.override("textual_backward", custom)
    try:
        system = tg.Parameter("Answer.", role="system prompt")
        out = tg.LLMCall(MockLLM(default="7"), system=system)("q")
        out.backward("wrong", propagator=tg.TextualPropagator(engine))
    finally:
        tg.prompts.override("textual_backward", None)
    assert engine.requests[0].messages[0]["content"] == "CUSTOM BACKWARD INSTRUCTIONS"


def test_the_kind_rules_are_stated_once_and_filled_into_every_update_prompt(tmp_path):
    from tracegrad.prompts.kinds import KIND_RULES, kind_rules

    rules = kind_rules()
    assert all(r.keep in rules for k, r in KIND_RULES.items() if k != "demos")
    assert KIND_RULES["demos"].keep not in rules  # told beside a demos parameter only
    for name in ("tgd_update", "trace_update", "opro_update"):
        text = tg.prompts.load(name)
        assert rules in text and "$kind_rules" not in text, name
    assert "$limit" in tg.prompts.load("feedback_summary")  # the caller's placeholders stay
    custom = tmp_path / "mine.txt"
    custom.write_text("Keep kinds: ${kind_rules}. Costs $5, $$ and $other.")
    tg.prompts.override("tgd_update", custom)
    try:
        assert tg.prompts.load("tgd_update") == f"Keep kinds: {rules}. Costs $5, $$ and $other."
    finally:
        tg.prompts.override("tgd_update", None)


def test_the_kind_wording_beside_a_parameter_and_in_the_reply_comes_from_the_same_table():
    from tracegrad.optim.constraints import KIND_HINTS
    from tracegrad.prompts.kinds import describe_kind, reply_reminder

    assert KIND_HINTS["number"] == "a single number"
    assert describe_kind("number") == "number (a single number)"
    assert describe_kind("custom") == "custom (custom)"
    assert reply_reminder("json") == "Only valid JSON goes between the tags."
    assert reply_reminder("text") == reply_reminder("custom") == ""
