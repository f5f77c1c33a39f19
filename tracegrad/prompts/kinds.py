"""What each kind of value is, and what a new value must do to stay that kind -- said once.

A parameter's ``value_kind`` (text, template, number, json, code) decides how a proposal
is parsed and checked (``tracegrad.optim.constraints``). The model has to hear the same
rules wherever it is asked for a value: in the system prompts of TGD, the trace
optimizer and OPRO (``$kind_rules``, filled in by :func:`tracegrad.prompts.load`), next
to each parameter (``kind: number (a single number)``) and in TGD's reply reminder.
All of that wording comes from this table, so the rules cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindRule:
    what: str  # what a value of this kind is, shown beside a parameter
    keep: str  # how a new value stays this kind, in the system prompts
    reply: str = ""  # what goes between the tags of a one-value reply


KIND_RULES: dict[str, KindRule] = {
    "text": KindRule("plain text", "text stays text"),
    "template": KindRule(
        "a Jinja2 template; {{ name }} marks a field filled in at run time",
        "a Jinja2 template keeps its fields",
        "The whole template goes between the tags, with every field kept.",
    ),
    "number": KindRule("a single number", "a number is only a number",
                       "Only the number goes between the tags."),
    "json": KindRule("a JSON value", "JSON is valid JSON",
                     "Only valid JSON goes between the tags."),
    "demos": KindRule(
        "a JSON list of few-shot demonstrations, each {\"input\": ..., \"output\": ...}",
        "demonstrations stay a JSON list of input/output objects",
        "Only the JSON list goes between the tags.",
    ),
    "code": KindRule(
        "Python source code of a function",
        "Python source keeps the function name and signature",
        "The whole Python source (imports and the complete function) goes between the "
        "tags; no markdown fences are needed.",
    ),
}


# kinds whose rule is told only beside a parameter of that kind (its constraint lines say
# it in full): every optimizer request would otherwise pay for a rule few runs need
LOCAL_KINDS = ("demos",)


def kind_rules() -> str:
    """Every common kind's rule in one sentence part, for ``$kind_rules`` in a system prompt."""
    return ", ".join(r.keep for k, r in KIND_RULES.items() if k not in LOCAL_KINDS)


def describe_kind(kind: str) -> str:
    """``number (a single number)``: a kind as shown beside a parameter."""
    rule = KIND_RULES.get(kind)
    return f"{kind} ({rule.what if rule else kind})"


def reply_reminder(kind: str) -> str:
    """What must go between the tags of a reply holding one value of ``kind`` ('' if nothing)."""
    rule = KIND_RULES.get(kind)
    return rule.reply if rule else ""


__all__ = ["KIND_RULES", "KindRule", "describe_kind", "kind_rules", "reply_reminder"]
