"""``tracegrad demo``: the whole optimization loop, offline, on a SIMULATED model.

Nothing here is a real language model. :class:`CountingWorld` is a scripted
:class:`~tracegrad.testing.MockLLM` that plays three roles, each reacting only to the
request it receives:

* **The task model** (purpose ``forward``) answers object-counting questions ("I have a
  violin, two pianos and a flute. How many musical instruments do I have?"). It knows
  the objects, but it has three bad habits, each cured by an instruction in its prompt:
  it answers in a sentence unless told to reply with only the number; it counts "two
  pianos" as one item unless told to add up the number words; and it counts every object
  unless told to count only the asked category.
* **The feedback model** (purpose ``backward``) reads one step's inputs, output and the
  metric's verdict, works out which habit produced the wrong answer, and says so.
* **The optimizer model** (purpose ``optimizer``) reads the current prompt and the
  feedback, and adds the instruction for the most reported problem that the prompt does
  not address yet. With OPRO (no feedback), it tries an instruction not yet in the best
  prompt, and the scores decide.

So the score only rises if the library's loop works end to end: the forward pass must
record the graph, the metric's explanation must reach the feedback model, the feedback
must reach the optimizer through backward, the optimizer's reply must be parsed and
validated, and the validation gate must keep the better prompt. No answer is hard-coded.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .llm.base import Request, content_to_text
from .llm.mock import MockLLM

__all__ = ["CountingWorld", "DEMO_PROMPT", "category_of", "make_examples", "parse_question", "run_demo"]

# -- the world's objects --------------------------------------------------------------------

CATEGORIES: dict[str, list[tuple[str, str]]] = {
    "musical instruments": [
        ("violin", "violins"), ("piano", "pianos"), ("flute", "flutes"), ("trumpet", "trumpets"),
        ("drum", "drums"), ("clarinet", "clarinets"), ("trombone", "trombones"),
        ("accordion", "accordions"), ("cello", "cellos"), ("guitar", "guitars"),
    ],
    "fruits": [
        ("apple", "apples"), ("banana", "bananas"), ("peach", "peaches"), ("plum", "plums"),
        ("strawberry", "strawberries"), ("orange", "oranges"), ("grape", "grapes"),
        ("nectarine", "nectarines"), ("raspberry", "raspberries"), ("blackberry", "blackberries"),
    ],
    "vegetables": [
        ("carrot", "carrots"), ("potato", "potatoes"), ("onion", "onions"),
        ("cabbage", "cabbages"), ("stalk of celery", "stalks of celery"),
        ("head of broccoli", "heads of broccoli"), ("yam", "yams"), ("turnip", "turnips"),
        ("lettuce head", "lettuce heads"), ("cauliflower", "cauliflowers"),
    ],
    "animals": [
        ("cat", "cats"), ("dog", "dogs"), ("rabbit", "rabbits"), ("goat", "goats"),
        ("pig", "pigs"), ("cow", "cows"), ("chicken", "chickens"), ("donkey", "donkeys"),
        ("frog", "frogs"), ("snail", "snails"),
    ],
}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_WORD_OF = {2: "two", 3: "three", 4: "four", 5: "five"}

_LEXICON: dict[str, str] = {}
for _cat, _pairs in CATEGORIES.items():
    for _s, _p in _pairs:
        _LEXICON[_s] = _cat
        _LEXICON[_p] = _cat

_QUESTION = re.compile(r"I have (?P<items>.+?)\. How many (?P<cat>[a-z ]+?) do I have\?")

DEMO_PROMPT = """\
---
description: Answer questions that ask how many objects of one kind someone has.
model: mock:simulated-counter
input:
  question: a sentence listing objects, then a question asking how many of one kind there are
output: answer
metric: exact_match
constraints:
  - Keep the prompt short and written as instructions to the model.
---
Answer the following question.

{{ question }}
"""

# -- the instructions the world reacts to ----------------------------------------------------
# (issue, instruction the optimizer writes, pattern the task model recognises)
FORMAT, MULTIPLES, CATEGORY = "format", "multiples", "category"
INSTRUCTIONS: dict[str, str] = {
    FORMAT: "Reply with only the final number, written in digits, and nothing else.",
    MULTIPLES: "Read the number words: 'two pianos' means 2 pianos, so add up the quantities "
               "instead of counting the names.",
    CATEGORY: "Only count the objects that belong to the category the question asks about; "
              "ignore all other objects.",
}
_UNDERSTANDS: dict[str, re.Pattern[str]] = {
    FORMAT: re.compile(r"only (?:the )?(?:final )?(?:number|count|digits)|digits only|"
                       r"nothing else but the number", re.I),
    MULTIPLES: re.compile(r"number words|add up the quantit|quantities", re.I),
    CATEGORY: re.compile(r"only count the (?:objects|items|things) that belong|ignore all other",
                         re.I),
}
# what the feedback model writes for each habit; the optimizer model recognises the marker
_DIAGNOSIS: dict[str, str] = {
    FORMAT: "The answer must be only the number, but the model wrote a sentence around it. "
            "[issue: format] The prompt should tell the model to reply with only the number.",
    MULTIPLES: "The model counted each object name once and ignored number words such as "
               "'two' or 'three'. [issue: multiples] The prompt should tell it to add up the "
               "quantities.",
    CATEGORY: "The model also counted objects that are not in the category the question asks "
              "about. [issue: category] The prompt should tell it to count only that category.",
}
_MARKER = re.compile(r"\[issue: (format|multiples|category)\]")


# -- facts about a question ------------------------------------------------------------------


def parse_question(text: str) -> tuple[list[tuple[str, int, str | None]], str] | None:
    """[(object, quantity, category)], asked category -- or None if no question is found."""
    m = _QUESTION.search(text)
    if not m:
        return None
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", m.group("items"))
    items: list[tuple[str, int, str | None]] = []
    for part in parts:
        words = part.strip().split(" ", 1)
        if len(words) != 2:
            continue
        qty = NUMBER_WORDS.get(words[0].lower(), 1)
        name = words[1].strip()
        items.append((name, qty, _LEXICON.get(name)))
    return items, m.group("cat")


def category_of(name: str) -> str | None:
    """The category of an object name of the demo world ("pianos" -> "musical instruments")."""
    return _LEXICON.get(name.strip().lower())


def _count(items: list[tuple[str, int, str | None]], cat: str, *, multiples: bool,
           category: bool) -> int:
    return sum((q if multiples else 1) for _, q, c in items if not category or c == cat)


def true_count(question: str) -> int:
    parsed = parse_question(question)
    if parsed is None:
        raise ValueError(f"not a counting question: {question!r}")
    items, cat = parsed
    return _count(items, cat, multiples=True, category=True)


def make_examples(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` distinct counting questions with their answers."""
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        cat = rng.choice(sorted(CATEGORIES))
        chosen = rng.sample(CATEGORIES[cat], rng.randint(3, 5))
        phrases = [(pair, rng.choice([1, 1, 2, 3])) for pair in chosen]
        if rng.random() < 0.6:
            other = rng.choice(sorted(c for c in CATEGORIES if c != cat))
            for pair in rng.sample(CATEGORIES[other], rng.randint(1, 2)):
                phrases.insert(rng.randrange(len(phrases) + 1), (pair, rng.choice([1, 2])))
        words = [_phrase(s, p, q) for (s, p), q in phrases]
        question = (f"I have {', '.join(words[:-1])}, and {words[-1]}. "
                    f"How many {cat} do I have?")
        if question in seen:
            continue
        seen.add(question)
        out.append({"question": question, "answer": str(true_count(question))})
    return out


def _phrase(singular: str, plural: str, qty: int) -> str:
    if qty == 1:
        return ("an " if singular[0] in "aeiou" else "a ") + singular
    return f"{_WORD_OF[qty]} {plural}"


# -- the scripted world -------------------------------------------------------------------------


def _user_text(request: Request) -> str:
    return "\n".join(content_to_text(m.get("content")) for m in request.messages
                     if m.get("role") == "user")


def _system_text(request: Request) -> str:
    return "\n".join(content_to_text(m.get("content")) for m in request.messages
                     if m.get("role") == "system")


class CountingWorld:
    """The SIMULATED engine and its three roles. ``engine`` is a MockLLM."""

    def __init__(self, model: str = "simulated-counter", seed: int = 0) -> None:
        self.seed = seed
        self.engine = MockLLM(self.reply, model=model)
        self.log: list[tuple[str, str]] = []

    def reply(self, request: Request) -> str:
        handler: Callable[[Request], str] = {
            "forward": self.answer,
            "backward": self.feedback,
            "optimizer": self.rewrite,
        }.get(request.purpose, self.answer)
        text = handler(request)
        self.log.append((request.purpose, text))
        return text

    def http_reply(self, body: dict[str, Any]) -> str:
        """The same world behind an HTTP server (``FakeOpenAIServer(world.http_reply)``):
        the purpose is not sent over the wire, so it is read from the request itself."""
        request = Request(messages=list(body.get("messages") or []),
                          purpose=infer_purpose(body.get("messages") or []))
        return self.reply(request)

    # -- the task model ----------------------------------------------------------------
    def answer(self, request: Request) -> str:
        prompt = "\n".join([_system_text(request), _user_text(request)])
        parsed = parse_question(prompt)
        if parsed is None:
            return "I am not sure what you are asking."
        items, cat = parsed
        instructions = _QUESTION.sub(" ", prompt)  # what the prompt says besides the question
        knows = {k: bool(p.search(instructions)) for k, p in _UNDERSTANDS.items()}
        n = _count(items, cat, multiples=knows[MULTIPLES], category=knows[CATEGORY])
        if knows[FORMAT]:
            return str(n)
        return f"Let me count them. I count {n} {cat}."

    # -- the feedback model --------------------------------------------------------------
    def feedback(self, request: Request) -> str:
        text = _user_text(request)
        keys = re.findall(r"^- `([^`]+)`:", text.split("## Inputs to give feedback on")[-1], re.M)
        runs = re.split(r"^## (?:Run #\d+|Step `[^`]*`)\s*$", text, flags=re.M)[1:] or [text]
        issues: list[str] = []
        for run in runs:
            for issue in self._diagnose(run):
                if issue not in issues:
                    issues.append(issue)
        if issues:
            advice = " ".join(_DIAGNOSIS[i] for i in issues)
        else:
            advice = "no change needed"
        out = {}
        for k in keys:
            # the prompt template is what the habits depend on; data inputs are not to blame
            out[k] = advice if ("template" in k or "prompt" in k or "system" in k) \
                else "no change needed"
        return json.dumps(out)

    def _diagnose(self, run: str) -> list[str]:
        out_m = re.search(r"<output>\n(.*?)\n</output>", run, re.S)
        fb_m = re.search(r"### Feedback on the output\n(.*)", run, re.S)
        parsed = parse_question(run)
        if not out_m or parsed is None:
            return []
        output = out_m.group(1).strip()
        verdict = fb_m.group(1) if fb_m else ""
        if re.search(r"\bCorrect\b", verdict) and "Wrong" not in verdict:
            return []
        items, cat = parsed
        found: list[str] = []
        if not re.fullmatch(r"\d+", output):
            found.append(FORMAT)
        nums = re.findall(r"\d+", output)
        if not nums:
            return found
        got = int(nums[-1])
        truth = _count(items, cat, multiples=True, category=True)
        if got == truth:
            return found
        for multiples, category in ((False, True), (True, False), (False, False)):
            if got == _count(items, cat, multiples=multiples, category=category):
                if not multiples:
                    found.append(MULTIPLES)
                if not category:
                    found.append(CATEGORY)
                break
        return found

    # -- the optimizer model --------------------------------------------------------------
    def rewrite(self, request: Request) -> str:
        system, user = _system_text(request), _user_text(request)
        if "<new_value>" in system or "<current_value>" in user:
            return self._rewrite_tgd(user)
        if '"values"' in system:
            return self._rewrite_trace(user)
        if "<value name=" in system:
            return self._rewrite_opro(user)
        # a feedback summary request: keep every distinct diagnosis, drop repeats
        seen: list[str] = []
        for issue in _MARKER.findall(user):
            if issue not in seen:
                seen.append(issue)
        return " ".join(_DIAGNOSIS[i] for i in seen) or "No problems were reported."

    @staticmethod
    def _issue_counts(feedback: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        blocks = re.findall(r"<feedback([^>]*)>(.*?)</feedback>", feedback, re.S) or [("", feedback)]
        for attrs, body in blocks:
            t = re.search(r'times="(\d+)"', attrs)
            weight = int(t.group(1)) if t else 1
            for issue in set(_MARKER.findall(body)):
                counts[issue] = counts.get(issue, 0) + weight
        return counts

    @staticmethod
    def _improve(template: str, counts: dict[str, int]) -> str:
        """Add the instruction for the most reported issue the template does not cover yet."""
        todo = [i for i in sorted(counts, key=lambda i: (-counts[i], i))
                if not _UNDERSTANDS[i].search(template)]
        if not todo:
            return template
        return _insert_instruction(template, INSTRUCTIONS[todo[0]])

    def _rewrite_tgd(self, user: str) -> str:
        cur = re.search(r"<current_value>\n(.*?)\n</current_value>", user, re.S)
        template = cur.group(1) if cur else ""
        fb = user.split("## Feedback on the current value", 1)[-1].split("## Constraints", 1)[0]
        counts = self._issue_counts(fb)
        if not counts:  # reflect: no critiques, only the examples; diagnose from them
            counts = self._counts_from_trace(user, fb)
        new = self._improve(template, counts)
        return f"The feedback points at one main problem; I address it.\n<new_value>\n{new}\n</new_value>"

    def _rewrite_trace(self, user: str) -> str:
        params = _trace_params(user)
        fb = user.split("## Feedback on the result", 1)[-1].split("## Earlier values", 1)[0]
        counts = self._issue_counts(fb)
        if not counts:  # no diagnosis in the feedback: diagnose from the trace listing
            counts = self._counts_from_trace(user, fb)
        values = {name: self._improve(value, counts) for name, value in params.items()
                  if "{{" in value}
        return json.dumps({"reasoning": "Address the most frequent error.", "values": values})

    def _counts_from_trace(self, listing: str, feedback: str) -> dict[str, int]:
        """Pair each "expected N, got TEXT" verdict with a question of the listing whose
        true count is N, and name the habit that explains TEXT."""
        questions = [parse_question(m.group(0)) for m in _QUESTION.finditer(listing)]
        counts: dict[str, int] = {}
        verdicts = re.finditer(r"expected '?(\d+)'?, got (?:'([^']*)'|\d+ \(the last number "
                               r"in '([^']*)'\))", feedback)
        for m in verdicts:
            want, got_text = int(m.group(1)), (m.group(2) or m.group(3) or "").strip()
            issues: set[str] = set()
            if not re.fullmatch(r"\d+", got_text):
                issues.add(FORMAT)
            nums = re.findall(r"\d+", got_text)
            if nums and int(nums[-1]) != want:
                got = int(nums[-1])
                for q in questions:
                    if q is None:
                        continue
                    items, cat = q
                    if _count(items, cat, multiples=True, category=True) != want:
                        continue
                    for multiples, category in ((False, True), (True, False), (False, False)):
                        if got == _count(items, cat, multiples=multiples, category=category):
                            if not multiples:
                                issues.add(MULTIPLES)
                            if not category:
                                issues.add(CATEGORY)
                            break
                    if issues - {FORMAT}:
                        break
            for i in issues:
                counts[i] = counts.get(i, 0) + 1
        return counts

    def _rewrite_opro(self, user: str) -> str:
        board = user.split("## Your reply", 1)[0]
        blocks = re.findall(r'<value name="([^"]+)">\n?(.*?)\n?</value>', board, re.S)
        if not blocks:
            return ""
        name, best = blocks[-1]  # shown from the lowest to the highest score
        missing = [i for i in (FORMAT, MULTIPLES, CATEGORY) if not _UNDERSTANDS[i].search(best)]
        if not missing:
            return f'<value name="{name}">\n{best}\n</value>'
        rng = random.Random(int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) ^ self.seed)
        new = _insert_instruction(best, INSTRUCTIONS[rng.choice(missing)])
        return f'<value name="{name}">\n{new}\n</value>'


def infer_purpose(messages: list[dict[str, Any]]) -> str:
    """forward, backward or optimizer, from what tracegrad's own requests look like."""
    text = "\n".join(content_to_text(m.get("content")) for m in messages)
    if "## Inputs to give feedback on" in text:
        return "backward"
    if ("<current_value>" in text or "## Parameters you may change" in text
            or '<value name="' in text or "Feedback items:" in text):
        return "optimizer"
    return "forward"


def _trace_params(text: str) -> dict[str, str]:
    """Parameter values in a trace-optimizer request: ``### NAME`` ... ``<value>...</value>``."""
    section = text.split("## Parameters you may change", 1)[-1].split("## Feedback on the result", 1)[0]
    out: dict[str, str] = {}
    for m in re.finditer(r"^### (.+?)\n.*?<value>\n(.*?)\n</value>", section, re.S | re.M):
        out[m.group(1).strip()] = m.group(2)
    return out


def _insert_instruction(template: str, instruction: str) -> str:
    """Put ``instruction`` on its own line after the existing instructions, before the first
    line that holds a field."""
    lines = template.split("\n")
    first_field = next((i for i, ln in enumerate(lines) if "{{" in ln or "{%" in ln), len(lines))
    at = first_field
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    lines.insert(at, instruction)
    return "\n".join(lines)


# -- the demo run ------------------------------------------------------------------------------


def run_demo(run_dir: str | Path | None = None, *, steps: int = 4, optimizer: str = "tgd",
             seed: int = 0, batch_size: int = 4, log: Callable[[str], None] | None = None,
             ) -> dict[str, Any]:
    """Optimize the demo prompt file on the simulated world; return what happened.

    Everything goes into ``run_dir`` (default: a new temporary directory): the run's files,
    the demo's ``counting.prompt`` (rewritten in place, the original kept as
    ``counting.prompt.bak``) and its two data files.
    """
    from .promptfile import PromptFile
    from .train import optimize, write_report

    say = log or (lambda _msg: None)
    root = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="tracegrad-demo-"))
    if (root / "history.jsonl").exists() or (root / "state.json").exists():
        raise FileExistsError(f"{root} already holds a run; choose another --run-dir")
    root.mkdir(parents=True, exist_ok=True)
    work = root
    prompt_path = work / "counting.prompt"
    prompt_path.write_text(DEMO_PROMPT, encoding="utf-8")
    rows = make_examples(40, seed=seed)
    train_rows, val_rows = rows[:24], rows[24:]
    for name, part in (("counting.train.jsonl", train_rows), ("counting.val.jsonl", val_rows)):
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")

    pf = PromptFile.load(prompt_path)
    train = pf.load_dataset(work / "counting.train.jsonl")
    val = pf.load_dataset(work / "counting.val.jsonl")
    world = CountingWorld(seed=seed)
    from .llm.meter import Meter

    engine = Meter(world.engine)  # so the run directory and report count calls and tokens
    program = pf.to_module(engine)
    say(f"SIMULATED world: {len(train)} training and {len(val)} validation questions; "
        f"optimizer {optimizer}, {steps} step{'' if steps == 1 else 's'}")

    say("SIMULATED baseline: scoring the starting prompt on the validation questions")

    def on_step(rec: dict[str, Any]) -> None:
        val_s = rec.get("val_score")
        say(f"SIMULATED step {rec['step']}/{steps}: minibatch {_f(rec.get('train_score'))}, "
            f"candidate on validation {_f(val_s)} -> {rec.get('result')}, best "
            f"{_f(rec.get('best_score'))}")

    result = optimize(program, train, val, metric=pf.metric_fn(judge_engine=engine),
                      optimizer=optimizer, steps=steps, batch_size=batch_size,
                      engine=engine, optimizer_engine=engine, run_dir=root,
                      seed=seed, concurrency=4, progress=False, on_step=on_step,
                      config={"simulated": True, "demo": "tracegrad demo"})
    best = str((result.best_state or {}).get("prompt", pf.body))
    if best != pf.body:
        pf.write(None, best)
    report = write_report(result.run_dir)
    val_scores = [result.baseline_score]
    for rec in result.history:
        s = _history_score(rec)
        if s is not None:
            val_scores.append(s)
    by_purpose: dict[str, int] = {}
    for r in world.engine.requests:
        by_purpose[r.purpose] = by_purpose.get(r.purpose, 0) + 1
    return {
        "before": pf.body,
        "after": best,
        "baseline_score": result.baseline_score,
        "best_score": result.best_score,
        "final_score": result.final_score,
        "val_scores": val_scores,
        "steps_done": result.steps_done,
        "stopped_reason": result.stopped_reason,
        "calls": world.engine.calls,
        "calls_by_purpose": by_purpose,
        "prompt_file": str(prompt_path),
        "run_dir": str(result.run_dir),
        "report": str(report),
    }


def _f(x: Any) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def _history_score(rec: Any) -> float | None:
    if not isinstance(rec, dict):
        rec = getattr(rec, "__dict__", {})
    for k in ("best_score",):
        v = rec.get(k)
        if isinstance(v, int | float):
            return float(v)
    return None
