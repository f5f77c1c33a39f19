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
from dataclasses import dataclass, field, replace
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

    def shared_explanations(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        """Like :meth:`outputs_by_missing`, but a reply that several smallest sets of missing
        rules produce is attributed only to the rules they all share (often none): a
        reflection cannot tell which rule is missing when the reply fits either."""
        names = [r.name for r in self.rules]
        return explained([(self.output(ex, frozenset(c)), frozenset(c))
                          for k in range(len(names) + 1) for c in combinations(names, k)])

    def expected(self, ex: dict[str, Any]) -> str:
        return self.output(ex, frozenset())

    def splits(self, seed: int, n_train: int, n_val: int, n_test: int
               ) -> tuple[list[dict[str, str]], ...]:
        rng = random.Random(seed)
        rows = [{self.field: ex[self.field], "answer": self.expected(ex)} for ex in self.examples]
        rng.shuffle(rows)
        a, b = n_train, n_train + n_val
        return rows[:a], rows[a:b], rows[b:b + n_test]


def explained(pairs: list[tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    """text -> the rules *every* smallest explanation of it shares (``pairs`` is
    (text, missing set) in order of growing sets)."""
    sets: dict[str, list[frozenset[str]]] = {}
    for text, fs in pairs:
        got = sets.setdefault(text, [])
        if not any(s <= fs for s in got):
            got.append(fs)
    return {t: frozenset.intersection(*ss) for t, ss in sets.items()}


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


# == the harder worlds ==========================================================================
#
# The four worlds above saturate near 0.95 within 8 steps for every optimizer that sees
# failing examples, so they show that evidence reaches the optimizer but not how well it
# searches. The three below run until a budget of 800 metric calls is spent (run.py), and
# each makes one more mechanism matter:
#
# - ``counting_hard``: many rules (10), seven of them rare (4-6% of examples each), rules
#   that show only once another is stated, one that interacts with another;
# - ``email_routing``: long inputs whose telling sentence sits anywhere in the email, rare
#   labels, and a rule that loses score when stated alone (a valley for a greedy gate);
# - ``triage_pipeline``: two prompts where the first one's faults show only through the
#   second one's answers.
#
# What is the same in all three (``HARD_NOISE`` and the methods below):
#
# - indirect evidence (a wrong output without the expected one) is understood at 0.15,
#   not 0.35 -- it matters where a request shows a step's output but not the final label;
# - the reflection stand-in *samples*: sent the same request again, it draws afresh
#   (``Noise.resample``). With the classic worlds' greedy stand-in, an optimizer whose
#   request does not change from step to step (OPRO after a step that proposed nothing)
#   got the same reply forever, which measured the stand-in, not the optimizer;
# - a reply that several smallest sets of missing rules explain is attributed only to
#   what they share (``shared_explanations``): a billing ticket routed to technical_issue
#   may lack either of two rules, and the stand-in infers neither from that alone;
# - length: every character of instructions past the world's budget adds 1/1000 to the
#   task model's slip rate (classic: 1/2000 past 700). The budget is computed, not
#   chosen: the start prompt, plus the shortest wording of every rule it lacks, plus 60
#   characters -- a prompt that states every rule tersely is free, each line of bloat
#   (a long wording, an irrelevant or harmful line the reflection slipped in) costs.
#
# The table's "ceiling" row is that terse all-rules prompt, scored on the test set (mean
# over 8 orders of its lines): what a perfect optimizer reaches through the slips.

HARD_NOISE: dict[str, Any] = {"indirect": 0.15, "length_scale": 1000, "resample": True}


def _length_budget(start: str, rules: list[Rule], slack: int = 60) -> int:
    """Instructions a prompt may have before slips rise: ``start`` plus the shortest wording
    of every rule it does not state (and a newline each), plus ``slack``."""
    need = sum(min(len(w) for w in r.wordings) + 1 for r in rules if not r.stated_in(start))
    return len(start) + need + slack


def _window(text: str, start: int, size: int, stop: str) -> str:
    """``size`` characters of ``text`` from ``start``, cut at the next ``stop``."""
    end = text.find(stop, start)
    return text[start: min(start + size, end if end >= 0 else len(text))]


# -- world 5: object counting with many, rare and interacting rules ------------------------

_PAIR_WORDS = ("a pair of", "a couple of")
_LATER = ("Tomorrow I will buy {x}.", "Next week I am going to get {x}.")
_GONE = {"fruits": "ate", "vegetables": "cooked", "musical instruments": "sold",
         "animals": "gave away"}


def _counting_hard_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(out) < n:
        total = rng.random() < 0.06
        cat = rng.choice(sorted(_OBJECTS))
        nouns = rng.sample(_OBJECTS[cat], 5)
        # an item: noun, category, quantity, how the quantity is written (word/pair/dozen)
        items = [[o, cat, rng.choice([1, 1, 2, 3]), "word"] for o in nouns[:3]]
        if total or rng.random() < 0.6:
            other = rng.choice(sorted(c for c in _OBJECTS if c != cat))
            items += [[o, other, rng.choice([1, 2]), "word"]
                      for o in rng.sample(_OBJECTS[other], 2)]
        how = rng.choices(["word", "pair", "dozen", "each"], [86, 5, 4, 5])[0]
        if how != "word":
            pick = rng.choice(items[:3])
            pick[2], pick[3] = {"pair": 2, "dozen": 12, "each": 2 * rng.choice([2, 3])}[how], how
        friend = (nouns[3], cat, rng.choice([1, 2])) if rng.random() < 0.05 else None
        later = (nouns[4], cat, rng.choice([1, 2])) if rng.random() < 0.05 else None
        removed = None
        if rng.random() < 0.05:
            can = [it for it in items[:3] if 2 <= it[2] < 12 and it[3] == "word"]
            removed = (rng.choice(can)[0], cat, 1) if can else None
        rng.shuffle(items)

        def phrase(o: str, q: int, how: str) -> str:
            if how == "pair":
                return f"{rng.choice(_PAIR_WORDS)} {_plural(o)}"
            if how == "dozen":
                return f"a dozen {_plural(o)}"
            if how == "each":
                return f"two bags with {_WORDS[q // 2]} {_plural(o)} each"
            return f"{_WORDS[q]} {o}" if q == 1 else f"{_WORDS[q]} {_plural(o)}"

        words = [phrase(o, q, p) for o, _, q, p in items]
        text = f"I have {', '.join(words[:-1])}, and {words[-1]}."
        if friend:
            text += f" My friend has {phrase(friend[0], friend[2], 'word')}."
        if later:
            text += " " + rng.choice(_LATER).format(x=phrase(later[0], later[2], "word"))
        if removed:
            text += f" I {_GONE[cat]} one of the {_plural(removed[0])}."
        text += (" How many objects do I have in total?" if total
                 else f" How many {cat} do I have?")
        if text in seen or len(text) > 290:  # short enough for every optimizer to see whole
            continue
        seen.add(text)
        out.append({"question": text, "items": [tuple(it) for it in items], "cat": cat,
                    "total": total, "friend": friend, "later": later, "removed": removed})
    return out


class CountingHardWorld(World):
    """BBH-style counting with ten rules: format (stated by the start prompt), number words
    and category filtering (common: 88% and 56% of examples, as in ``object_counting``),
    and seven that each matter on 4-6% of examples: questions about the total (count every
    kind), "a pair of" / "a couple of" (two), "a dozen" (twelve), "two bags with three
    plums each" (multiply), a friend's objects (not mine), things I will only buy later
    (not yet mine), and objects eaten, sold or given away (subtract).

    Why it is hard:

    * rare evidence: with 60 training examples a rare rule has about three of them, a
      batch of 4 holds one about a fifth of the time, and the example must fail *because
      of* that rule to show it: a pair, a dozen or a bag counted as one object shows only
      once quantities are read at all, a removal only once the model does arithmetic. A
      reply that two rules explain equally (a dozen counted as one and every number word
      ignored can give the same count) shows neither. On 50 validation examples a rare
      rule is worth 2-3 examples, about what re-drawing the task model's slips moves a
      score, so the gate itself is noisy about exactly these rules;
    * interaction: the category rule, stated alone, breaks the total questions (the model
      then counts one kind only) that were right without it; it is still a net gain on
      validation, so a greedy gate accepts it, and the total questions then fail and show
      the missing rule -- the optimizer must repair what its last accepted step broke;
    * length: see the section comment; the gate keeps rejecting proposals whose gain is
      smaller than the slips their extra lines cost.

    Once the prompt is good most minibatches are perfect and a step costs only its 4
    examples, so an optimizer scans the training set cheaply for the rare failures: with
    enough budget every rule is found. The budget axis is what separates optimizers here.
    """

    def outputs_by_missing(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        return self.shared_explanations(ex)

    def output(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        m, items = missing, ex["items"]
        if ex["total"]:
            pool = ([it for it in items if it[1] == items[0][1]]
                    if "category" not in m and "total" in m else list(items))
        else:
            pool = list(items) if "category" in m else [it for it in items if it[1] == ex["cat"]]

        def qty(q: int, how: str) -> int:
            if "multiples" in m or (how in m and how in ("pair", "dozen")):
                return 1
            return q // 2 if how == "each" and "each" in m else q

        n = sum(qty(q, how) for _, _, q, how in pool)
        for extra in ("friend", "later"):
            if ex[extra] and extra in m:
                n += qty(ex[extra][2], "word")
        if ex["removed"] and "removal" not in m and "multiples" not in m and any(
                it[0] == ex["removed"][0] for it in pool):
            n -= ex["removed"][2]
        return self.render(n, "format" not in m)


def counting_hard_world(seed: int = 0, n: int = 240) -> World:
    base = counting_world(seed, 1)
    fmt, multiples, category = base.rules
    multiples = replace(multiples, applies=lambda ex: any(
        q > 1 for _, c, q, _ in ex["items"] if c == ex["cat"] or ex["total"]))
    # the classic wording "Only count the objects that belong to ..." also reads as the
    # format rule there; here the format is stated from the start, so that does not matter
    category = replace(category, applies=lambda ex: not ex["total"] and any(
        c != ex["cat"] for _, c, _, _ in ex["items"]))
    total = Rule(
        "total",
        (r"(in total|the total|all (the )?(objects|items|things)).*(count (all|every)|everything)",
         r"count (all|every)(thing| object| item).*(total|every kind|regardless)",
         r"total .*(regardless|whatever|any) (of )?(the )?(kind|categor)"),
        ("If the question asks for the total, count every object of every kind.",
         "When asked how many objects in total, count all items regardless of category."),
        ("a question asking for the total was answered with only one kind of object",),
        lambda ex: ex["total"], lambda ex, a: a)
    pair = Rule(
        "pair",
        (r"(pair|couple) (of )?(means|counts as|is|are) (2|two)",
         r"(pair|couple).*(as|means) (2|two)", r"'a (pair|couple) of'"),
        ("'A pair of' and 'a couple of' mean two.", "Count a pair or a couple as 2 objects."),
        ("'a pair of' or 'a couple of' was counted as one object instead of two",),
        lambda ex: any(h == "pair" for _, _, _, h in ex["items"]), lambda ex, a: a)
    dozen = Rule(
        "dozen",
        (r"dozen (means|is|counts as|=) (12|twelve)", r"dozen.*\b(12|twelve)\b"),
        ("'A dozen' means 12.", "Count a dozen as twelve objects."),
        ("'a dozen' was counted as one object instead of twelve",),
        lambda ex: any(h == "dozen" for _, _, _, h in ex["items"]), lambda ex, a: a)
    each = Rule(
        "each",
        (r"\beach\b.*(multiply|times)", r"(multiply|times).*\beach\b"),
        ("'Two bags with three plums each' means 6 plums: multiply.",
         "When a number of containers hold some objects each, multiply the two numbers."),
        ("'two bags with three of something each' was counted as three instead of six",),
        lambda ex: any(h == "each" for _, _, _, h in ex["items"]), lambda ex, a: a)
    later = Rule(
        "later",
        (r"(will|going to|later|planned|future)\b.*(do not|don't|doesn't|never|not) count",
         r"only what (i|you|the speaker) (ha(ve|s)|owns?) (now|today|already)"),
        ("Things I will only buy or get later do not count yet.",
         "Count only what I have now, not planned purchases."),
        ("objects I only plan to buy or get later were counted",),
        lambda ex: ex["later"] is not None, lambda ex, a: a)
    friend = Rule(
        "friend",
        (r"(friend|someone else|other people)\W.*(not|n't|never) count",
         r"(only|just) (count )?(my|your|the speaker'?s) own",
         r"belong(s|ing)? to (someone|others|other people|a friend)"),
        ("Objects that belong to someone else, such as a friend, do not count.",
         "Count only the speaker's own objects, never a friend's."),
        ("objects that belong to a friend were counted as the speaker's",),
        lambda ex: ex["friend"] is not None, lambda ex, a: a)
    removal = Rule(
        "removal",
        (r"(subtract|take away|minus).*(gave away|given away|ate|eaten|lost|sold|cooked)",
         r"(gave away|given away|eaten|sold|cooked).*(subtract|do not count|don't count)",
         r"no longer (have|own).*(subtract|not count|take away)"),
        ("Subtract objects that were eaten, cooked, sold or given away.",
         "Take away anything I ate, cooked, sold or gave away; I no longer have it."),
        ("objects that were eaten, cooked, sold or given away were still counted",),
        lambda ex: ex["removed"] is not None, lambda ex, a: a)
    rules = [fmt, multiples, category, total, pair, dozen, each, friend, later, removal]
    start = ("Answer the following question. Reply with only the final count, in digits."
             "\n\n{{ question }}\n")
    return CountingHardWorld(
        "counting_hard", "question",
        "Answer questions that ask how many objects someone has.", start, rules,
        _counting_hard_examples(n, seed), "exact_match", base.render,
        harmful=base.harmful, irrelevant=base.irrelevant,
        noise={**HARD_NOISE, "long_prompt": _length_budget(start, rules)})


# -- world 6: routing long support emails ----------------------------------------------------

_LABELS6 = ("billing", "technical_issue", "account_access", "feature_request", "security",
            "cancellation")
_FILLER = [
    "I hope you are doing well.", "We have used your product at {company} for {n} years.",
    "Our team of {n} people relies on it every day.", "I already searched the help center.",
    "My colleague {name} suggested I write to you.", "We are on the {plan} plan.",
    "I am writing from my phone, sorry for any typos.", "It started on {day}.",
    "Nothing else has changed on our side recently.",
    "Please let me know if you need more details.",
    "We are quite busy this quarter, so a quick answer would help.",
    "Last time your team was very helpful.", "I can send screenshots if that is useful.",
    "Our office is in {city}, in case that matters.",
]
_KEYS = {
    "charge": ["My card was charged ${amt} twice on {day}.",
               "Invoice {inv} shows ${amt}, more than our plan costs.",
               "The renewal charge of ${amt} went through although we downgraded.",
               "We were billed ${amt} for seats we removed on {day}."],
    "pay_error": ["The payment page then showed error {code}.",
                  "When I tried to pay again, I got error {code}."],
    "login_mention": ["I logged in this morning at {time} to check it.",
                      "I saw this after I signed in to the dashboard on {day}."],
    "access": ["I cannot log in since {day}; the reset email never arrives.",
               "My account is locked after too many password attempts at {time}.",
               "Two-factor codes are rejected every time I try to sign in since {day}."],
    "tech": ["The app crashes when I upload a photo, error {code}.",
             "Sync stopped updating on my laptop after version {ver}.",
             "Pages take over {n} seconds to load since {day}.",
             "Export produces a blank file since version {ver}."],
    "feature": ["It would be great to export reports to Excel.",
                "Please add a dark mode to the editor.",
                "Could you support shared folders for teams of {n}?",
                "A weekly digest email would be very useful for us."],
    "security": ["I got an email asking for my password that looked like yours, at {time}.",
                 "Someone signed in to my account from {country} on {day}.",
                 "I think my account was hacked; there are {n} projects I never created."],
    "cancel": ["Please cancel our subscription at the end of {month}.",
               "We would like to close our account and stop the service by {day}.",
               "Please end our plan; we are moving to another tool in {month}."],
    "fix": ["Could you please make PDF export work again? It fails since version {ver}.",
            "Would you kindly fix calendar sync, which no longer updates since {day}?",
            "It would be lovely if uploads worked again; they fail with error {code}."],
}
_KINDS = [("billing", 30), ("account_access", 10), ("technical_issue", 15),
          ("feature_request", 13), ("security", 8), ("cancellation", 8), ("fix", 8)]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        company=rng.choice(_NAMES), n=rng.randint(2, 40), name=rng.choice(
            ["Sam", "Ana", "Lee", "Priya", "Tom", "Ines", "Omar", "Kim"]),
        plan=rng.choice(["Team", "Pro", "Starter", "Enterprise"]),
        day=f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}", month=rng.choice(_MONTHS),
        city=rng.choice(["Lyon", "Austin", "Porto", "Leeds", "Graz", "Osaka"]),
        amt=f"{rng.randint(12, 900)}.{rng.randint(0, 99):02d}", inv=f"INV-{rng.randint(100, 999)}",
        code=rng.randint(400, 599), time=f"{rng.randint(6, 22)}:{rng.randint(0, 59):02d}",
        ver=f"{rng.randint(2, 9)}.{rng.randint(0, 20)}",
        country=rng.choice(["Brazil", "Vietnam", "Romania", "Kenya", "Peru"]))


def _email_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    ids = rng.sample(range(10000, 99999), n * 2)
    kinds, weights = zip(*_KINDS, strict=True)
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        error = login = False
        if kind == "billing":
            keys = {"charge": _fill(rng, rng.choice(_KEYS["charge"]))}
            if rng.random() < 0.4:
                error, keys["pay_error"] = True, _fill(rng, rng.choice(_KEYS["pay_error"]))
            if rng.random() < 0.5:
                login, keys["login_mention"] = True, _fill(rng, rng.choice(_KEYS["login_mention"]))
        else:
            slot = {"account_access": "access", "technical_issue": "tech",
                    "feature_request": "feature", "cancellation": "cancel"}.get(kind, kind)
            keys = {slot: _fill(rng, rng.choice(_KEYS[slot]))}
        body = [_fill(rng, f) for f in rng.sample(_FILLER, rng.randint(5, 8))]
        for sentence in keys.values():
            body.insert(rng.randint(0, len(body)), sentence)
        anchor = f"Ticket #{ids[len(out)]}."
        greet = rng.choice(["Hi team,", "Hello,", "Dear support,"])
        sign = _fill(rng, rng.choice(["Best regards, {name} ({company}).", "Thanks, {name}.",
                                      "Kind regards, {name}, {company}."]))
        text = f"{anchor} {greet} {' '.join(body)} {sign}"
        k = keys
        cues = {"money": (k.get("charge"), k.get("pay_error")),
                "guard": (k.get("charge"), k.get("login_mention")),
                "access": (k.get("access") or k.get("security"),),
                "security": (k.get("security"),), "cancel": (k.get("cancel"),),
                "fix": (k.get("fix"),), "format": ()}
        out.append({"ticket": text, "anchor": anchor, "kind": kind, "error": error,
                    "login": login, "cues": {r: tuple(c for c in v if c) for r, v in cues.items()
                                             if all(v)}})
    return out


class EmailRoutingWorld(World):
    """Support emails (about 260-580 characters: greeting, five to eight sentences of
    context, signature) to route to one of six labels; the one or two sentences that
    decide the label sit at a random place among the others. Seven rules: format (stated
    by the start prompt), payment errors are billing (14% of emails), sign-in problems are
    account_access (11%), a billing email that mentions logging in stays billing (16%),
    phishing and hacked accounts are security (8%), cancellations (8%), and polite
    requests to fix something broken are technical_issue, not feature_request (9%).

    Why it is hard:

    * evidence must be seen, not just be present: the reflection stand-in recognises an
      email by its ticket number, but infers a rule only if the sentences that show it
      (``ex["cues"]``) are in the request too. tracegrad's ``shorten`` keeps the head and
      tail of a long value; cut to 300 characters (the trace optimizer's listing) about a
      quarter of the telling sentences survive, cut to 200 (the failure notes an
      optimizer's history shows) under a tenth. So this world measures how much of each
      example an optimizer actually shows the model;
    * a valley: stating the sign-in rule alone sends the billing emails that mention
      logging in to account_access, which loses more (16%) than it gains (11%), and the
      rule that repairs it shows only once the sign-in rule is in the prompt. A greedy
      gate rejects the sign-in rule alone; it gets through when a step bundles it with
      another gain (one security email shows both the sign-in and the security rule) or
      when a seed's validation split and slips happen to favour it. A search that keeps
      per-example winners (Pareto) could cross it on purpose;
    * three rare labels, each on about 4 of 50 validation emails.
    """

    def route(self, ex: dict[str, Any], m: frozenset[str]) -> str:
        kind = ex["kind"]
        if kind == "billing":
            if ex["error"] and "money" in m:
                return "technical_issue"
            if ex["login"] and "access" not in m and "guard" in m:
                return "account_access"
            return "billing"
        if kind == "account_access":
            return "technical_issue" if "access" in m else "account_access"
        if kind == "security":
            if "security" not in m:
                return "security"
            return "technical_issue" if "access" in m else "account_access"
        if kind == "cancellation":
            return "billing" if "cancel" in m else "cancellation"
        if kind == "fix":
            return "feature_request" if "fix" in m else "technical_issue"
        return kind

    def output(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        return self.render(self.route(ex, missing), "format" not in missing)

    def outputs_by_missing(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        return self.shared_explanations(ex)

    def evidence(self, text: str, direct: float, indirect: float) -> dict[str, float]:
        """As :meth:`World.evidence`, but an email is recognised by its ticket number, and a
        rule counts only if every sentence that shows it (``ex["cues"]``) is in the window."""
        found: dict[str, float] = {}
        for ex in self.examples:
            at = text.find(ex["anchor"])
            while at >= 0:
                start = at + len(ex["anchor"])
                window = _window(text, start, len(ex["ticket"]) + 400, "Ticket #")
                expected = self.expected(ex)
                for output, missing in sorted(self.possible_outputs(ex).items(),
                                              key=lambda kv: -len(kv[0])):
                    if output == expected or not missing or not delimited(output, window):
                        continue
                    p = direct if delimited(expected, window) else indirect
                    for name in missing:
                        cues = ex["cues"].get(name)
                        if cues is not None and all(c in window for c in cues):
                            found[name] = max(found.get(name, 0.0), p)
                    break
                at = text.find(ex["anchor"], start)
        return found


def email_routing_world(seed: int = 0, n: int = 240) -> World:
    classic = routing_world(seed, 1)
    fmt = _format_rule(
        classic.rules[0].recognise,
        ("Reply with only the label: billing, technical_issue, account_access, "
         "feature_request, security or cancellation.",),
        "the reply is a sentence, not one of the six labels")
    _, access, money = classic.rules
    access = replace(access, applies=lambda ex: ex["kind"] == "account_access")
    money = replace(money, applies=lambda ex: ex["kind"] == "billing" and ex["error"])
    guard = Rule(
        "guard",
        (r"(mention|say)s?\b.*(log(ging)? in|logged in|sign(ing)? in|signed in).*"
         r"(still|stay|remain)s? billing",
         r"billing.*(even|also) (if|when).*(log|sign)",
         r"(log|sign).?in (is|was) (only )?(mentioned|incidental)"),
        ("A billing email that only mentions logging in is still billing.",
         "Choose billing when the problem is a charge, even if the customer also says they "
         "logged in."),
        ("billing emails that mention logging in were routed to account_access instead of "
         "billing",),
        lambda ex: ex["kind"] == "billing" and ex["login"], lambda ex, a: a)
    security = Rule(
        "security",
        (r"(suspicious|phishing|hacked|compromised).*\bsecurity\b",
         r"\bsecurity\b.*(suspicious|phishing|hacked|compromised)"),
        ("Phishing, suspicious sign-ins and hacked accounts are security.",
         "Route suspicious emails and compromised accounts to security."),
        ("reports of phishing or a hacked account were routed to account_access instead of "
         "security",),
        lambda ex: ex["kind"] == "security", lambda ex, a: a)
    cancel = Rule(
        "cancel",
        (r"cancel\w*.*\bcancellation\b", r"(close|closing|end|stop)\w* .*\bcancellation\b",
         r"\bcancellation\b.*(not|rather than|instead of) billing"),
        ("Requests to cancel or close an account are cancellation, not billing.",
         "When the customer wants to end or cancel the service, use cancellation."),
        ("cancellation requests were routed to billing instead of cancellation",),
        lambda ex: ex["kind"] == "cancellation", lambda ex, a: a)
    fix = Rule(
        "fix",
        (r"(broken|stopped working|does not work|doesn't work|no longer works?).*technical_issue",
         r"(fix|repair)\w* .*technical_issue.*(not|rather than|instead of) feature",
         r"technical_issue.*(even|also) (if|when).*(polite|request|phrased)"),
        ("A polite request to fix something that stopped working is technical_issue.",
         "If something is broken, choose technical_issue even when it is phrased as a "
         "request."),
        ("requests to fix something broken were routed to feature_request instead of "
         "technical_issue",),
        lambda ex: ex["kind"] == "fix", lambda ex, a: a)
    rules = [fmt, money, access, guard, security, cancel, fix]
    start = (f"Route the support email. {fmt.wordings[0]}\n\n{{{{ ticket }}}}\n")

    def render(answer: Any, formatted: bool) -> str:
        return answer if formatted else f"This email looks like {answer.replace('_', ' ')}."

    return EmailRoutingWorld(
        "email_routing", "ticket", "Route a support email to one of six teams.", start,
        rules, _email_examples(n, seed), "exact_match", render,
        harmful=classic.harmful, irrelevant=classic.irrelevant,
        noise={**HARD_NOISE, "long_prompt": _length_budget(start, rules)})


WORLDS["counting_hard"] = counting_hard_world
WORLDS["email_routing"] = email_routing_world


# -- world 7: a two-prompt triage pipeline whose first prompt is judged only downstream ---------

SUMMARY_START = "Summary step: write a one-line note about the support ticket for the router."
ROUTE_START = ("Routing step: choose the team from the note.\nReply with only the label: "
               "billing, technical_issue, account_access, feature_request, incident or security.")
# what the summary step writes for each fact it keeps, in this order (no label words, so a
# note never looks like an answer)
_PHRASES = {"money": "a charge or an invoice is involved", "login": "the customer cannot sign in",
            "outage": "many colleagues are affected at once",
            "security": "a message or sign-in looked suspicious",
            "error": "an error message appears", "feature": "the customer asks for something new"}
_KEEP_BY_DEFAULT = {"error", "feature"}
_TRIAGE = {
    "billing": (["I was charged twice for my subscription this month.",
                 "My card was declined at renewal.", "Why did my monthly price go up?",
                 "Can I get a refund for last month?"], {"money"}),
    "account_access": (["I forgot my password and the reset email never arrives.",
                        "My account is locked after too many attempts.",
                        "Two-factor codes are rejected when I try to get in."], {"login"}),
    "technical_issue": (["The app crashes when I upload a photo.",
                         "Export to PDF produces a blank file.",
                         "Sync stopped working on my laptop."], {"error"}),
    "feature_request": (["Please add a dark mode.", "Could you support shared folders?",
                         "I wish there was a weekly digest."], {"feature"}),
    "incident": (["Nobody in our office can open the dashboard today.",
                  "The whole team gets timeouts since this morning."], {"outage", "error"}),
    "security": (["I got an email asking for my password that looked like yours.",
                  "Someone I do not know changed my recovery phone number."], {"security"}),
}
_TRIAGE_WEIGHTS = {"billing": 30, "account_access": 15, "technical_issue": 17,
                   "feature_request": 15, "incident": 12, "security": 11}


def _triage_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    labels = sorted(_TRIAGE_WEIGHTS)
    while len(out) < n:
        label = rng.choices(labels, [_TRIAGE_WEIGHTS[x] for x in labels])[0]
        texts, facts = _TRIAGE[label]
        facts = set(facts)
        text = rng.choice(texts)
        if label == "billing" and rng.random() < 0.5:
            facts.add("error")
            text += rng.choice(_ERRORS)
        ref = str(rng.randint(1000, 9999))
        text += rng.choice(_NOISE) + f" (ref {ref})"
        if text in seen:
            continue
        seen.add(text)
        out.append({"ticket": text, "label": label, "facts": frozenset(facts), "ref": ref})
    return out


class TriageWorld(World):
    """Support tickets through two prompts: a summary step writes a one-line note (with the
    ticket's reference), and a routing step, which sees *only the note*, chooses one of six
    labels. Nine rules: four
    belong to the summary prompt (keep money matters, sign-in trouble, the number of people
    affected, anything suspicious -- by default a note keeps only errors and requests;
    they matter on 29%, 16%, 11% and 10% of tickets),
    five to the routing prompt (format, stated by the start prompt; money beats an error;
    sign-in trouble is account_access; many people affected is incident; suspicious is
    security). A rule stated in the wrong prompt does nothing.

    Why it is hard: the summary prompt's faults are never wrong *answers* by themselves.
    A note that dropped "a charge is involved" looks like a fine note; it is wrong only in
    the light of the final label. So the evidence for a summary rule is the ticket, the
    note and the final wrong and expected labels together (what a trace of the whole run
    shows: inferred at the direct rate), or less: the note with the final labels but
    without the ticket, or the ticket and note without the labels (what the per-step
    requests of textual backward show: the indirect rate, 0.15 here). The final label alone
    is ambiguous -- a billing ticket routed to technical_issue may lack the summary rule or
    the routing rule -- and the stand-in infers only what every explanation of a reply
    shares, i.e. nothing. Two rules must be found in *different* prompts before a security
    or incident ticket comes out right (the note must keep the fact and the router must use
    it), so stating one of them changes no score and the evidence for the other appears
    only after the first was accepted on a tie.

    Both steps can slip, so the ceiling is lower than in one-prompt worlds (about 0.92).
    """

    stage_of_rule = {"format": "route", "money_first": "route", "login_label": "route",
                     "incident_label": "route", "security_label": "route",
                     "keep_money": "summary", "keep_login": "summary", "keep_scope": "summary",
                     "keep_security": "summary"}
    keep_for_fact = {"money": "keep_money", "login": "keep_login", "outage": "keep_scope",
                     "security": "keep_security"}
    fact_for_label = {"billing": "money", "account_access": "login", "incident": "outage",
                      "security": "security"}

    @staticmethod
    def stage_of_param(name: str) -> str | None:
        """The step a parameter belongs to, from its name (what a request shows)."""
        return {"summary_prompt": "summary", "route_prompt": "route"}.get(name)

    def stage_rules(self, stage: str) -> list[Rule]:
        return [r for r in self.rules if self.stage_of_rule[r.name] == stage]

    def stage_of(self, prompt: str) -> str | None:
        head = prompt.lstrip().lower()
        if head.startswith("summary step"):
            return "summary"
        if head.startswith("routing step"):
            return "route"
        return None

    # -- the two steps ---------------------------------------------------------------------
    def kept(self, ex: dict[str, Any], missing: frozenset[str]) -> frozenset[str]:
        return frozenset(f for f in ex["facts"] if f in _KEEP_BY_DEFAULT
                         or self.keep_for_fact[f] not in missing)

    @staticmethod
    def note_text(facts: frozenset[str], ref: str) -> str:
        """The summary step's note: the ticket's reference (so each note is its own input
        to the router, as a real summary would be) and a phrase per kept fact."""
        shown = [_PHRASES[f] for f in _PHRASES if f in facts]
        return f"Note (ref {ref}): " + ("; ".join(shown) if shown else "nothing specific") + "."

    def note(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        return self.note_text(self.kept(ex, missing), ex["ref"])

    @staticmethod
    def parse_note(text: str) -> frozenset[str]:
        return frozenset(f for f, ph in _PHRASES.items() if ph in text)

    @staticmethod
    def route(facts: frozenset[str], m: frozenset[str]) -> str:
        if "security" in facts and "security_label" not in m:
            return "security"
        if "outage" in facts and "incident_label" not in m:
            return "incident"
        if "money" in facts and ("error" not in facts or "money_first" not in m):
            return "billing"
        if "login" in facts and "login_label" not in m:
            return "account_access"
        if "error" in facts:
            return "technical_issue"
        if "feature" in facts:
            return "feature_request"
        return "technical_issue"

    def output(self, ex: dict[str, Any], missing: frozenset[str]) -> str:
        return self.render(self.route(self.kept(ex, missing), missing), "format" not in missing)

    # -- what a reflection can infer --------------------------------------------------------
    def outputs_by_missing(self, ex: dict[str, Any]) -> dict[str, frozenset[str]]:
        """Notes and final replies for ``ex``; a reply several rule sets explain is
        attributed only to what they share."""
        names = [r.name for r in self.rules]
        pairs = []
        for k in range(len(names) + 1):
            for combo in combinations(names, k):
                fs = frozenset(combo)
                pairs += [(self.note(ex, fs), fs), (self.output(ex, fs), fs)]
        return explained(pairs)

    def route_outputs(self, facts: frozenset[str]) -> dict[str, frozenset[str]]:
        names = [r.name for r in self.stage_rules("route")]
        return explained([
            (self.render(self.route(facts, frozenset(c)), "format" not in c), frozenset(c))
            for k in range(len(names) + 1) for c in combinations(names, k)])

    def evidence(self, text: str, direct: float, indirect: float) -> dict[str, float]:
        """Two kinds of evidence. (1) A ticket followed by what the run made of it (its
        note and/or final reply), as in :meth:`World.evidence` with a 700-character window.
        (2) A note followed by the router's wrong label and the expected one: the routing
        rules that explain the label (direct rate), and, when even a perfect router would
        be wrong on that note, the summary rule for the fact the expected label needs
        (indirect rate: the ticket is not there to show that the fact was in it)."""
        found: dict[str, float] = {}

        def add(names: frozenset[str] | set[str], p: float) -> None:
            for name in names:
                found[name] = max(found.get(name, 0.0), p)

        for inp, ex in self.by_input.items():
            at = text.find(inp)
            if at < 0:
                continue
            window = text[at + len(inp): at + len(inp) + 700]
            expected = self.expected(ex)
            for output, missing in sorted(self.possible_outputs(ex).items(),
                                          key=lambda kv: -len(kv[0])):
                if output == expected or not missing or not delimited(output, window):
                    continue
                add(missing, direct if delimited(expected, window) else indirect)
                break
        for m in re.finditer(r"Note \(ref \d+\): [^\n\"]*?\.", text):
            window = _window(text, m.end(), 400, "Note (ref ")
            want = re.search(r"expected '([a-z_]+)'", window)
            if want is None:
                continue
            label, facts = want.group(1), self.parse_note(m.group(0))
            for output, missing in sorted(self.route_outputs(facts).items(),
                                          key=lambda kv: -len(kv[0])):
                if output == label or not delimited(output, window.replace(want.group(0), "")):
                    continue
                add(missing, direct)
                need = self.fact_for_label.get(label)
                if self.route(facts, frozenset()) != label and need and need not in facts:
                    add({self.keep_for_fact[need]}, indirect)
                break
        return found


def triage_world(seed: int = 0, n: int = 240) -> World:
    classic = routing_world(seed, 1)
    fmt = _format_rule(
        classic.rules[0].recognise,
        ("Reply with only the label: billing, technical_issue, account_access, "
         "feature_request, incident or security.",),
        "the reply is a sentence, not one of the six labels")

    def keep(name: str, fact: str, recognise: tuple[str, ...], wordings: tuple[str, ...],
             critique: str) -> Rule:
        return Rule(name, recognise, wordings, (critique,),
                    lambda ex: fact in ex["facts"], lambda ex, a: a)

    def routes(name: str, label: str, recognise: tuple[str, ...], wordings: tuple[str, ...],
               critique: str, when: Callable[[dict[str, Any]], bool]) -> Rule:
        return Rule(name, recognise, wordings, (critique,), when, lambda ex, a: a)

    rules = [
        fmt,
        keep("keep_money", "money",
             (r"(mention|keep|include|say)\w*\b.*\b(charges?|invoices?|payments?|money)\b",),
             ("Mention in the note whether a charge, invoice or payment is involved.",
              "Keep any money matter (charges, invoices, payments) in the note."),
             "the note left out that a charge or an invoice is involved", ),
        keep("keep_login", "login",
             (r"(mention|keep|include|say)\w*\b.*\b(sign.?in|log.?in|password)\w* "
              r"(trouble|problems?|fails?|failures?)",
              r"(mention|keep|include|say)\w*\b.*\bcannot (sign|log) in"),
             ("Mention in the note when the customer cannot sign in.",
              "Keep sign-in and password trouble in the note."),
             "the note left out that the customer cannot sign in"),
        keep("keep_scope", "outage",
             (r"(mention|keep|include|say)\w*\b.*\b(how many|several|many) "
              r"(users|people|colleagues)",),
             ("Say in the note how many people are affected.",
              "Keep it in the note when many colleagues are affected at once."),
             "the note left out that many colleagues are affected at once"),
        keep("keep_security", "security",
             (r"(mention|keep|include|say)\w*\b.*\b(suspicious|phishing|hacked)",),
             ("Mention in the note anything suspicious, such as phishing.",
              "Keep suspicious messages and odd account changes in the note."),
             "the note left out that a message or sign-in looked suspicious"),
        routes("money_first", "billing",
               (r"\bmoney\b.*\bbilling\b", r"(charge|invoice|payment).*billing.*(even|also)"),
               ("When money is involved, choose billing even if an error is mentioned.",
                "Money matters go to billing, even with an error message."),
               "notes about a charge that also mention an error were routed to "
               "technical_issue instead of billing",
               lambda ex: ex["facts"] >= {"money", "error"}),
        routes("login_label", "account_access",
               (r"(sign.?in|log.?in|password).*\baccount_access\b",
                r"cannot (sign|log) in.*\baccount_access\b"),
               ("Sign-in and password trouble goes to account_access.",
                "If the customer cannot sign in, choose account_access."),
               "notes about sign-in trouble were not routed to account_access",
               lambda ex: "login" in ex["facts"]),
        routes("incident_label", "incident",
               (r"(many|several) (colleagues|users|people).*\bincident\b",
                r"(widespread|outages?)\b.*\bincident\b"),
               ("When many colleagues are affected at once, choose incident.",
                "Widespread outages are incident, not technical_issue."),
               "notes about many colleagues affected were not routed to incident",
               lambda ex: "outage" in ex["facts"]),
        routes("security_label", "security",
               (r"(suspicious|phishing|hacked).*\bsecurity\b",
                r"\bsecurity\b.*(suspicious|phishing|hacked)"),
               ("Anything suspicious, like phishing, is security.",
                "Choose security for suspicious messages or account changes."),
               "notes about something suspicious were not routed to security",
               lambda ex: "security" in ex["facts"]),
    ]

    def render(answer: Any, formatted: bool) -> str:
        return answer if formatted else f"This one goes to {answer.replace('_', ' ')}."

    budget = max(_length_budget(SUMMARY_START, [r for r in rules if r.name.startswith("keep")]),
                 _length_budget(ROUTE_START, [r for r in rules if not r.name.startswith("keep")]))
    return TriageWorld("triage_pipeline", "ticket",
                       "Route a support ticket through a summary step and a routing step.", "",
                       rules, _triage_examples(n, seed), "exact_match", render,
                       harmful=classic.harmful, irrelevant=classic.irrelevant,
                       noise={**HARD_NOISE, "long_prompt": budget})


WORLDS["triage_pipeline"] = triage_world
CLASSIC = ("object_counting", "support_routing", "invoice_extraction", "counting_pipeline")
HARD = ("counting_hard", "email_routing", "triage_pipeline")
