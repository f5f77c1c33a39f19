"""SIMULATED worlds: tasks whose hidden rules a prompt must state for a stand-in model to
answer well. Nothing here is a language model; see ``models.py`` for the two stand-ins.

A world is a set of examples plus rules. Each rule, when the prompt does not state it,
corrupts the answer to the examples it concerns in a way that shows in the output (a
sentence instead of a number, the wrong label, an unnormalised date). A rule is
recognised in a prompt by *meaning classes*: several regular expressions for different
wordings, so a rewrite that says the same thing in other words still counts.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A hidden rule of a world.

    ``recognise``: patterns, any of which in the prompt means the rule is stated.
    ``wordings``: instructions the reflection stand-in may write once it infers the rule.
    ``critiques``: phrases it writes in feedback that name the rule (evidence for later).
    ``applies``: whether an example is affected; ``corrupt``: the answer without the rule.
    """

    name: str
    recognise: tuple[str, ...]
    wordings: tuple[str, ...]
    critiques: tuple[str, ...]
    applies: Callable[[dict[str, Any]], bool]
    corrupt: Callable[[dict[str, Any], Any], Any]

    def stated_in(self, prompt: str) -> bool:
        return any(re.search(p, prompt, re.I) for p in self.recognise)


@dataclass
class World:
    """A task: examples (``inputs`` field -> text, ``answer``), rules and a starting prompt.

    ``render(answer)`` turns a structured answer into the task model's reply text, so the
    format rule (always the first rule) can wrap it in a sentence.
    """

    name: str
    field: str
    description: str
    start_prompt: str
    rules: list[Rule]
    examples: list[dict[str, Any]]
    metric: str
    render: Callable[[Any, bool], str]
    harmful: tuple[str, ...] = ()
    irrelevant: tuple[str, ...] = ()
    # overrides of the stand-ins' Noise for this world (the harder worlds set some)
    noise: dict[str, Any] = field(default_factory=dict)
    by_input: dict[str, dict[str, Any]] = field(default_factory=dict)
    _outputs: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_input = {ex[self.field]: ex for ex in self.examples}

    def possible_outputs(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        """:meth:`outputs_by_missing`, computed once per example."""
        key = ex[self.field]
        got = self._outputs.get(key)
        if got is None:
            got = self._outputs[key] = self.outputs_by_missing(ex)
        return got

    def evidence(self, text: str, direct: float, indirect: float) -> dict[str, float]:
        """rule name -> probability that a reflection reading ``text`` infers the rule.

        Evidence is an example's input followed (within 2,500 characters) by a wrong reply
        the task model gives to it: the rules whose absence produces that reply can be
        inferred, with probability ``direct`` when the expected reply is there too and
        ``indirect`` when it is not. Nothing else in ``text`` counts.
        """
        found: dict[str, float] = {}
        for inp, ex in self.by_input.items():
            at = text.find(inp)
            if at < 0:
                continue
            window = text[at + len(inp): at + len(inp) + 2500]
            expected = self.expected(ex)
            for output, missing in sorted(self.possible_outputs(ex).items(),
                                          key=lambda kv: -len(kv[0])):
                if output == expected or not missing or not delimited(output, window):
                    continue
                p = direct if delimited(expected, window) else indirect
                for name in missing:
                    found[name] = max(found.get(name, 0.0), p)
                break
        return found

    def output(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        """The reply text for ``ex`` when the rules in ``missing`` are not stated."""
        answer = ex["answer"]
        for rule in self.rules[1:]:
            if rule.name in missing and rule.applies(ex):
                answer = rule.corrupt(ex, answer)
        return self.render(answer, self.rules[0].name not in missing)

    def outputs_by_missing(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        """Every reply the task model can give to ``ex``, each with the smallest set of
        missing rules that produces it (what a reflection can infer from seeing it)."""
        names = [r.name for r in self.rules]
        out: dict[str, frozenset[str]] = {}
        for k in range(len(names) + 1):
            for combo in combinations(names, k):
                text = self.output(ex, frozenset(combo))
                out.setdefault(text, frozenset(combo))
        return out

    def expected(self, ex: dict[str, Any]) -> str:
        return self.output(ex, frozenset())

    def splits(self, seed: int, n_train: int, n_val: int, n_test: int
               ) -> tuple[list[dict[str, str]], ...]:
        rng = random.Random(seed)
        rows = [{self.field: ex[self.field], "answer": self.expected(ex)} for ex in self.examples]
        rng.shuffle(rows)
        a, b = n_train, n_train + n_val
        return rows[:a], rows[a:b], rows[b:b + n_test]


def delimited(needle: str, hay: str) -> bool:
    """``needle`` occurs in ``hay`` as a whole (not inside a longer word or number)."""
    return re.search(r"(?<![\w.$-])" + re.escape(needle) + r"(?![\w-])", hay) is not None


def _format_rule(recognise: tuple[str, ...], wordings: tuple[str, ...], critique: str) -> Rule:
    return Rule("format", recognise, wordings, (critique,), lambda ex: True, lambda ex, a: a)


# -- world 1: BBH-style object counting ------------------------------------------------------

_OBJECTS = {
    "fruits": ["apple", "banana", "peach", "plum", "orange", "grape", "nectarine", "pear"],
    "musical instruments": ["violin", "piano", "flute", "trumpet", "drum", "clarinet", "cello"],
    "vegetables": ["carrot", "potato", "onion", "cabbage", "yam", "turnip", "lettuce head"],
    "animals": ["cat", "dog", "rabbit", "goat", "pig", "cow", "donkey", "frog"],
}
_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("ch", "sh", "o")) else "s")


def _counting_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        cat = rng.choice(sorted(_OBJECTS))
        items = [(o, cat, rng.choice([1, 1, 2, 3])) for o in rng.sample(_OBJECTS[cat], 3)]
        if rng.random() < 0.6:
            other = rng.choice(sorted(c for c in _OBJECTS if c != cat))
            items += [(o, other, rng.choice([1, 2])) for o in rng.sample(_OBJECTS[other], 2)]
        rng.shuffle(items)
        words = [(f"{_WORDS[q]} {o}" if q == 1 else f"{_WORDS[q]} {_plural(o)}")
                 for o, _, q in items]
        text = f"I have {', '.join(words[:-1])}, and {words[-1]}. How many {cat} do I have?"
        if text in seen:
            continue
        seen.add(text)
        out.append({"question": text, "items": items, "cat": cat,
                    "answer": sum(q for _, c, q in items if c == cat)})
    return out




def counting_world(seed: int = 0, n: int = 120) -> World:
    fmt = _format_rule(
        (r"only (the )?(final )?(number|count|digits?|integer)", r"digits only",
         r"nothing (else )?(but|except) the (number|count)", r"just the (number|count)"),
        ("Reply with only the final count, written in digits.",
         "Give just the number as digits and nothing else."),
        "the reply wraps the count in a sentence instead of giving only the number")
    multiples = Rule(
        "multiples",
        (r"number words", r"quantit(y|ies)", r"'?two \w+'? (means|counts as) 2",
         r"(multiply|add up|sum) .*(amounts|counts of each)"),
        ("Read the number words: 'two pianos' means 2 pianos, so add up the quantities.",
         "Take quantities into account: sum how many of each object there are."),
        ("it counted each object name once and ignored number words like 'two'",),
        lambda ex: any(q > 1 for _, c, q in ex["items"] if c == ex["cat"]),
        lambda ex, a: a - sum(q - 1 for _, c, q in ex["items"] if c == ex["cat"]))
    category = Rule(
        "category",
        (r"only count .*(belong|of the (asked|requested)|in the (asked|requested))",
         r"ignore (all )?(other|unrelated) (objects|items|categories)",
         r"ignore .*other (categor|kinds)", r"count only the (requested|asked)",
         r"(exclude|skip) .*(not|outside) .*categor"),
        ("Only count the objects that belong to the category the question asks about.",
         "Ignore objects from other categories; count only the requested kind."),
        ("it also counted objects outside the category the question asks about",),
        lambda ex: any(c != ex["cat"] for _, c, _ in ex["items"]),
        lambda ex, a: a + sum(q for _, c, q in ex["items"] if c != ex["cat"]))

    def render(answer: Any, formatted: bool) -> str:
        return str(answer) if formatted else f"Let me count. I think the answer is {answer}."

    return World("object_counting", "question",
                 "Answer questions that ask how many objects of one kind someone has.",
                 "Answer the following question.\n\n{{ question }}\n",
                 [fmt, multiples, category], _counting_examples(n, seed), "exact_match", render,
                 harmful=("Explain your reasoning in a full sentence before answering.",),
                 irrelevant=("Be polite and friendly.", "Think about the objects carefully."))


# -- world 2: support-ticket routing ---------------------------------------------------------

_TICKETS = {
    "billing": ["I was charged twice for my subscription this month.",
                "Can I get an invoice for last quarter?", "My card was declined at renewal.",
                "Why did my monthly price go up?"],
    "technical_issue": ["The app crashes when I upload a photo.",
                        "Sync stopped working on my laptop.", "Pages load very slowly today.",
                        "Export to PDF produces a blank file."],
    "account_access": ["I forgot my password and the reset email never arrives.",
                       "My account is locked after too many login attempts.",
                       "Two-factor codes are rejected when I sign in.",
                       "I cannot log in since I changed my email."],
    "feature_request": ["Please add a dark mode.", "It would be great to export to Excel.",
                        "Could you support shared folders?", "I wish there was a weekly digest."],
}
_NOISE = ["", " Thanks.", " This is urgent.", " I've been a customer for years.", " Regards, Sam."]
_ERRORS = [" The page showed an error code 500.", " I got an error message on screen."]


def _ticket_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        label = rng.choice(sorted(_TICKETS))
        text = rng.choice(_TICKETS[label])
        has_error = label == "billing" and rng.random() < 0.5
        if has_error:
            text += rng.choice(_ERRORS)
        text += rng.choice(_NOISE) + f" (ref {rng.randint(1000, 9999)})"
        if text in seen:
            continue
        seen.add(text)
        out.append({"ticket": text, "label": label, "error": has_error, "answer": label})
    return out


def routing_world(seed: int = 0, n: int = 120) -> World:
    fmt = _format_rule(
        (r"only the (label|category)", r"(one|a single) (word|label) from",
         r"exactly one of .*billing", r"reply with (just )?the label"),
        ("Reply with only the label: billing, technical_issue, account_access or "
         "feature_request.", "Answer with exactly one of billing, technical_issue, "
         "account_access, feature_request and nothing else."),
        "the reply is a sentence, not one of the four labels")
    access = Rule(
        "access",
        (r"(login|log in|sign.?in|password).*(account_access|access)",
         r"account_access.*(login|log in|password|locked)",
         r"locked.*(account_access|access problem)"),
        ("Login, password, locked-account and two-factor problems are account_access, not "
         "technical_issue.", "Route anything about signing in or passwords to account_access."),
        ("sign-in and password problems were routed to technical_issue instead of "
         "account_access",),
        lambda ex: ex["label"] == "account_access",
        lambda ex, a: "technical_issue")
    money = Rule(
        "money",
        (r"(charge|payment|refund|invoice|price).*(billing).*(even|also|error)",
         r"(even|also) (if|when) .*error.*billing",
         r"money .*billing"),
        ("Tickets about charges, invoices or prices are billing even when they mention an "
         "error.", "If money is involved, choose billing, even if an error message is "
                   "mentioned."),
        ("payment tickets that mention an error were routed to technical_issue instead of "
         "billing",),
        lambda ex: ex["error"],
        lambda ex, a: "technical_issue")

    def render(answer: Any, formatted: bool) -> str:
        return answer if formatted else f"This ticket looks like {answer.replace('_', ' ')}."

    return World("support_routing", "ticket",
                 "Route a support ticket to billing, technical_issue, account_access or "
                 "feature_request.", "Classify the support ticket.\n\n{{ ticket }}\n",
                 [fmt, access, money], _ticket_examples(n, seed), "exact_match", render,
                 harmful=("Describe the ticket's topic in your own words.",),
                 irrelevant=("Be empathetic with the customer.", "Tickets come from users."))


# -- world 3: invoice field extraction ---------------------------------------------------------

_NAMES = ["Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Stark Industries", "Wayne Enterprises",
          "Hooli", "Vandelay Imports", "Soylent Co", "Tyrell Systems"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]


def _invoice_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        name = rng.choice(_NAMES)
        y, m, d = rng.choice([2023, 2024, 2025]), rng.randint(1, 12), rng.randint(1, 28)
        cents = rng.randint(1000, 900000)
        raw_amount = f"${cents // 100:,}.{cents % 100:02d}"
        raw_date = f"{_MONTHS[m - 1]} {d}, {y}"
        text = rng.choice([
            f"Invoice from {name} dated {raw_date} for {raw_amount}.",
            f"{name} billed us {raw_amount} on {raw_date}.",
            f"On {raw_date}, {name} sent an invoice totalling {raw_amount}.",
        ])
        if text in seen:
            continue
        seen.add(text)
        out.append({"text": text, "raw_date": raw_date, "raw_amount": raw_amount,
                    "answer": {"name": name, "date": f"{y:04d}-{m:02d}-{d:02d}",
                               "amount": round(cents / 100, 2)}})
    return out


def invoice_world(seed: int = 0, n: int = 120) -> World:
    fmt = _format_rule(
        (r"only (the |a )?json", r"json object (only|and nothing else)", r"no (extra )?text "
         r"(around|outside|besides) the json", r"just the json"),
        ("Reply with only a JSON object with the keys name, date and amount.",
         "Output just the JSON object {\"name\", \"date\", \"amount\"} and no other text."),
        "the JSON is wrapped in explanatory text")
    date = Rule(
        "date",
        (r"yyyy-mm-dd", r"iso ?(8601)? (date|format)", r"dates? as year-month-day"),
        ("Write the date as YYYY-MM-DD.", "Normalise dates to ISO format (YYYY-MM-DD)."),
        ("the date was copied as written instead of normalised to year-month-day",),
        lambda ex: True,
        lambda ex, a: {**a, "date": ex["raw_date"]})
    amount = Rule(
        "amount",
        (r"amount as a (plain )?number", r"(without|no) (the )?currency (symbol|sign)",
         r"strip .*(\$|currency|commas)"),
        ("Give the amount as a plain number without currency symbol or commas.",
         "Strip the $ sign and thousands commas from the amount; write a number."),
        ("the amount kept its currency symbol and commas instead of being a number",),
        lambda ex: True,
        lambda ex, a: {**a, "amount": ex["raw_amount"]})

    def render(answer: Any, formatted: bool) -> str:
        body = json.dumps(answer, sort_keys=True)
        return body if formatted else f"Here are the fields I found: {body}"

    return World("invoice_extraction", "text",
                 "Extract the name, date and amount of an invoice as JSON.",
                 "Extract the invoice fields.\n\n{{ text }}\n",
                 [fmt, date, amount], _invoice_examples(n, seed), "exact_match", render,
                 harmful=("Quote the invoice sentence before the fields.",),
                 irrelevant=("Invoices may come from many companies.",))


WORLDS: dict[str, Callable[..., World]] = {
    "object_counting": counting_world,
    "support_routing": routing_world,
    "invoice_extraction": invoice_world,
}


# -- world 4: a two-prompt pipeline whose fault sits in the first prompt ------------------------

EXTRACT_START = "Extraction step: list every object mentioned in the text, one per line."
ANSWER_START = "Answer step: use the object list to answer the question."


class PipelineWorld(World):
    """Object counting as extract -> answer. The category and quantity rules belong to the
    extraction prompt (stage "extract"), the format rule to the answer prompt; a rule
    stated in the wrong prompt does nothing, so credit must reach the first prompt."""

    stage_of_rule = {"format": "answer", "multiples": "extract", "category": "extract"}

    def listing(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        items = [(o, c, q) for o, c, q in ex["items"]
                 if "category" in missing or c == ex["cat"]]
        if "multiples" in missing:
            return "\n".join(o for o, _, _ in items)
        return "\n".join(f"{q} x {o}" for o, _, q in items)

    @staticmethod
    def count(listing: str) -> int:
        total = 0
        for line in listing.splitlines():
            m = re.match(r"\s*(\d+)\s*x\s", line)
            total += int(m.group(1)) if m else (1 if line.strip() else 0)
        return total

    def output(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        n = self.count(self.listing(ex, missing))
        return self.render(n, "format" not in missing)

    def outputs_by_missing(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        out = super().outputs_by_missing(ex)
        for k in range(3):
            for combo in combinations(["multiples", "category"], k):
                out.setdefault(self.listing(ex, frozenset(combo)), frozenset(combo))
        return out

    def stage_of(self, prompt: str) -> str | None:
        if prompt.lstrip().lower().startswith("extraction step"):
            return "extract"
        if prompt.lstrip().lower().startswith("answer step"):
            return "answer"
        return None


def pipeline_world(seed: int = 0, n: int = 120) -> World:
    base = counting_world(seed, n)
    return PipelineWorld("counting_pipeline", "question", base.description, "",
                         base.rules, base.examples, base.metric, base.render,
                         harmful=base.harmful, irrelevant=base.irrelevant)


WORLDS["counting_pipeline"] = pipeline_world
