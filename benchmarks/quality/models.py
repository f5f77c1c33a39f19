"""The two SIMULATED stand-in models of a world, served through tracegrad's engine interface.

* :class:`TaskModel` answers an example by which of the world's rules the prompt states
  (recognised by meaning, several wordings each), with seeded slips and a penalty for
  prompts grown past a length.
* :class:`ReflectionModel` answers feedback, rewrite and summary requests using only what
  the request contains. It infers a rule from evidence found in the request text: a failing
  example's input together with the wrong output that rule produces (more likely when the
  expected output is there too), or a critique that names the rule. Without evidence it
  can only guess from a weak prior. It sometimes adds a harmful or irrelevant instruction,
  drops one that was there, or breaks the reply format.

Every random choice is seeded by the request text and the run's seed (and, with
``Noise.resample``, by how many times the reflection was sent that exact request before),
so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from dataclasses import dataclass

from quality.worlds import PipelineWorld, TriageWorld, World
from tracegrad.llm.base import Request, content_to_text
from tracegrad.llm.meter import BudgetExceeded


@dataclass
class Noise:
    """Rates of the stand-ins' imperfections (each a probability per request)."""

    slip: float = 0.05          # task model gives a wrong answer anyway
    long_prompt: int = 700      # instructions longer than this (chars) slip more:
    length_scale: int = 2000    # ... by (length - long_prompt) / length_scale
    direct: float = 0.85        # infer a rule from input + wrong output + expected output
    indirect: float = 0.35      # ... from input + wrong output only
    critique: float = 0.6       # ... from a critique that names it
    prior: float = 0.1          # guess an unstated rule with no evidence at all
    harmful: float = 0.08       # add an instruction that hurts
    irrelevant: float = 0.1     # add an instruction that does nothing
    drop: float = 0.05          # drop an instruction line that was there
    broken: float = 0.04        # reply in a format the optimizer cannot parse
    # the reflection samples afresh when asked the same request again (temperature > 0);
    # False: the same request always gets the same reply (the classic worlds' setting)
    resample: bool = False


_COUNTER = re.compile(r"\b([A-Za-z_]+?)\d+\b")


def _rng(seed: int, *parts: str) -> random.Random:
    # node names carry process-wide counters (llm_call12): keep them out of the seed so a
    # run's replies do not depend on what ran before it in the same process
    key = "\x00".join((str(seed), *(_COUNTER.sub(r"\1", p) for p in parts)))
    h = hashlib.sha256(key.encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def _text(request: Request, role: str | None = None) -> str:
    return "\n".join(content_to_text(m.get("content")) for m in request.messages
                     if role is None or m.get("role") == role)


class TaskModel:
    """The model that runs the prompt being optimized.

    ``rollouts`` counts program runs on one example (the first call of a pipeline run; every
    call otherwise), i.e. metric calls. With ``cap`` set, the call that would start
    rollout ``cap + 1`` raises :class:`BudgetExceeded`, which stops an ``optimize()`` run
    cleanly at that point, the way a spending limit does.
    """

    def __init__(self, world: World, seed: int, noise: Noise, cap: int | None = None) -> None:
        self.world, self.seed, self.noise = world, seed, noise
        self.rollouts, self.cap = 0, cap
        self._lock = threading.Lock()

    def _rollout(self) -> None:
        with self._lock:
            if self.cap is not None and self.rollouts >= self.cap:
                raise BudgetExceeded(f"the benchmark's budget of {self.cap} metric calls is spent",
                                     kind="calls", limit=self.cap, used=self.rollouts, needed=1)
            self.rollouts += 1

    def _slip(self, instructions: str) -> float:
        return self.noise.slip + max(0, len(instructions) - self.noise.long_prompt) / (
            self.noise.length_scale)

    def __call__(self, request: Request) -> str:
        text = _text(request)
        if isinstance(self.world, TriageWorld):
            return self.triage_step(request)
        if isinstance(self.world, PipelineWorld):
            return self.pipeline_step(request)
        ex = next((e for inp, e in self.world.by_input.items() if inp in text), None)
        if ex is None:
            return "I do not see a question."
        self._rollout()
        instructions = text.replace(ex[self.world.field], " ")
        missing = {r.name for r in self.world.rules if not r.stated_in(instructions)}
        if any(h.lower() in instructions.lower() for h in self.world.harmful):
            missing.add(self.world.rules[0].name)
        rng = _rng(self.seed, "task", text)
        if rng.random() < self._slip(instructions):
            wrong = [o for o in self.world.possible_outputs(ex) if o != self.world.expected(ex)]
            return rng.choice(sorted(wrong))
        return self.world.output(ex, frozenset(missing))

    def pipeline_step(self, request: Request) -> str:
        """One step of the two-prompt pipeline: each step reads only its own prompt."""
        world = self.world
        assert isinstance(world, PipelineWorld)
        system, user = _text(request, "system"), _text(request, "user")
        ex = next((e for inp, e in world.by_input.items() if inp in user), None)
        if ex is None:
            return "I do not see a question."
        if not user.startswith("Objects:"):
            self._rollout()
        rng = _rng(self.seed, "task", system, user)
        if user.startswith("Objects:"):
            listing = user.split("\n\nQuestion:", 1)[0].removeprefix("Objects:\n")
            formatted = world.rules[0].stated_in(system) and not any(
                h.lower() in system.lower() for h in world.harmful)
            n = world.count(listing)
            if rng.random() < self.noise.slip:
                n += rng.choice([-1, 1])
            return world.render(n, formatted)
        missing = {r.name for r in world.rules[1:] if not r.stated_in(system)}
        return world.listing(ex, frozenset(missing))

    def triage_step(self, request: Request) -> str:
        """A step of the triage pipeline: the router reads only the note, never the ticket."""
        world = self.world
        assert isinstance(world, TriageWorld)
        system, user = _text(request, "system"), _text(request, "user")
        rng = _rng(self.seed, "task", system, user)
        slip = rng.random() < self._slip(system)
        if user.lstrip().startswith("Note (ref "):
            facts = world.parse_note(user)
            missing = {r.name for r in world.stage_rules("route") if not r.stated_in(system)}
            if any(h.lower() in system.lower() for h in world.harmful):
                missing.add("format")
            label = world.route(facts, frozenset(missing))
            if slip:
                label = rng.choice(sorted({world.route(frozenset({f}), frozenset())
                                           for f in world.keep_for_fact} - {label}))
            return world.render(label, "format" not in missing)
        ex = next((e for inp, e in world.by_input.items() if inp in user), None)
        if ex is None:
            return "I do not see a ticket."
        self._rollout()
        missing = {r.name for r in world.stage_rules("summary") if not r.stated_in(system)}
        kept = world.kept(ex, frozenset(missing))
        if slip and kept:
            kept = kept - {rng.choice(sorted(kept))}
        return world.note_text(kept, ex["ref"])


class ReflectionModel:
    """The model that writes feedback and rewrites (purposes ``backward`` and ``optimizer``)."""

    def __init__(self, world: World, seed: int, noise: Noise) -> None:
        self.world, self.seed, self.noise = world, seed, noise
        self._asked: dict[str, int] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _rng(self, *parts: str) -> random.Random:
        """The random source of one decision; with ``resample``, the n-th identical request
        draws differently from the first (a sampled model, not a greedy one)."""
        sample = getattr(self._local, "sample", 0)
        return _rng(self.seed, *parts, *((f"sample {sample}",) if sample else ()))

    # -- evidence ----------------------------------------------------------------------
    def evidence(self, text: str) -> dict[str, float]:
        """rule name -> probability of inferring it from what ``text`` shows."""
        world, noise = self.world, self.noise
        found = world.evidence(text, noise.direct, noise.indirect)
        for rule in world.rules:
            if any(c.lower() in text.lower() for c in rule.critiques):
                found[rule.name] = max(found.get(rule.name, 0.0), noise.critique)
        return found

    def infer(self, text: str, salt: str) -> list[str]:
        rng = self._rng("infer", salt, text)
        return [name for name, p in sorted(self.evidence(text).items()) if rng.random() < p]

    # -- requests ----------------------------------------------------------------------
    def __call__(self, request: Request) -> str:
        user = _text(request, "user")
        sample = 0
        if self.noise.resample:
            key = _COUNTER.sub(r"\1", _text(request))
            with self._lock:
                sample = self._asked.get(key, 0)
                self._asked[key] = sample + 1
        self._local.sample = sample
        if "## Inputs to give feedback on" in user:
            return self.feedback(user)
        if "<version_a>" in user:
            return self.merge(user)
        if "<current_value>" in user:
            return self.rewrite_tagged(user)
        if "## Parameters you may change" in user:
            return self.rewrite_trace(user)
        if '<value name="' in user:
            return self.rewrite_opro(user)
        inferred = self.infer(user, "summary")
        return " ".join(self._critique(n) for n in inferred) or "No specific problem was named."

    def _critique(self, name: str) -> str:
        rule = next(r for r in self.world.rules if r.name == name)
        return f"The prompt is missing a rule: {rule.critiques[0]}."

    def feedback(self, user: str) -> str:
        tail = user.split("## Inputs to give feedback on")[-1]
        keys = re.findall(r"^- `([^`]+)`:", tail, re.M)
        inferred = self.infer(user, "feedback")
        advice = " ".join(self._critique(n) for n in inferred) or (
            "The answer is not what was expected; the prompt could be clearer.")
        if re.search(r"\bCorrect\b", user) and "Wrong" not in user and "expected" not in user:
            advice = "no change needed"
        return json.dumps({k: advice for k in keys})

    def improve(self, value: str, evidence_text: str, salt: str, param: str = "") -> str:
        """``value`` with an instruction for each inferred unstated rule, plus noise.

        In a pipeline, a rule goes only into the prompt of the step where it acts: the
        step is read from the parameter the request names (``param``) where the world
        knows its parameters, else from the value's first words."""
        world, noise = self.world, self.noise
        rng = self._rng("rewrite", salt, evidence_text, value)
        todo = [n for n in self.infer(evidence_text, salt)
                if not next(r for r in world.rules if r.name == n).stated_in(value)]
        by_param = getattr(world, "stage_of_param", None)
        stage = by_param(param) if by_param and param else (
            world.stage_of(value) if hasattr(world, "stage_of_rule") else None)
        if stage is not None:
            # a reflection that knows which step it rewrites puts a rule only where it acts
            todo = [n for n in todo if world.stage_of_rule[n] == stage]
        unstated = [r.name for r in world.rules if not r.stated_in(value)]
        if by_param and stage is not None:  # and guesses, too, only what could act there
            unstated = [n for n in unstated if world.stage_of_rule[n] == stage]
        if not todo and unstated and rng.random() < noise.prior:
            todo = [rng.choice(unstated)]
        lines = value.split("\n")
        if rng.random() < noise.drop:
            plain = [i for i, ln in enumerate(lines) if ln.strip() and "{{" not in ln]
            if plain:
                del lines[rng.choice(plain)]
        new = [rng.choice(next(r for r in world.rules if r.name == n).wordings) for n in todo]
        if rng.random() < noise.harmful and world.harmful:
            new.append(rng.choice(world.harmful))
        if rng.random() < noise.irrelevant and world.irrelevant:
            new.append(rng.choice(world.irrelevant))
        return _insert(lines, new)

    def rewrite_tagged(self, user: str) -> str:
        cur = re.search(r"<current_value>\n(.*?)\n</current_value>", user, re.S)
        name = re.search(r"^name: (\S+)", user, re.M)
        new = self.improve(cur.group(1) if cur else "", user, "tgd", name.group(1) if name else "")
        if self._rng("broken", user).random() < self.noise.broken:
            return f"Here is a better prompt:\n{new}"
        return f"I add what the feedback asks for.\n<new_value>\n{new}\n</new_value>"

    def merge(self, user: str) -> str:
        """Two versions of a value in one: A's lines, then B's instructions A lacks. Like
        a rewrite it may drop a line or break the reply format; it invents nothing."""
        a = re.search(r"<version_a>\n(.*?)\n</version_a>", user, re.S)
        b = re.search(r"<version_b>\n(.*?)\n</version_b>", user, re.S)
        lines = (a.group(1) if a else "").split("\n")
        extra = [ln for ln in (b.group(1) if b else "").split("\n")
                 if ln.strip() and ln not in lines and "{{" not in ln and "{%" not in ln]
        rng = _rng(self.seed, "merge", user)
        if extra and rng.random() < self.noise.drop:
            del extra[rng.randrange(len(extra))]
        merged = _insert(lines, extra)
        if rng.random() < self.noise.broken:
            return f"Merged:\n{merged}"
        return f"Both versions combined.\n<new_value>\n{merged}\n</new_value>"

    def rewrite_trace(self, user: str) -> str:
        # only the parameters' own section: the history below it also has ### headings
        section = user.split("## Parameters you may change", 1)[-1].split("\n## ", 1)[0]
        params = {m.group(1).strip(): m.group(2) for m in re.finditer(
            r"^### (.+?)\n.*?<value>\n(.*?)\n</value>", section, re.S | re.M)}
        values = {k: self.improve(v, user, f"trace:{k}", k) for k, v in params.items()}
        if self._rng("broken", user).random() < self.noise.broken:
            return "values: " + str(values)
        return json.dumps({"reasoning": "Address the errors in the trace.", "values": values})

    def rewrite_opro(self, user: str) -> str:
        board = user.split("## Your reply", 1)[0]
        blocks = re.findall(r'<value name="([^"]+)">\n?(.*?)\n?</value>', board, re.S)
        if not blocks:
            return "I cannot find the values."
        # every parameter the request asks for, each from the best (last) entry that has it
        asked = re.search(r"block for each of: (.+?)\.\s*$", user, re.M)
        names = [n.strip() for n in asked.group(1).split(",")] if asked else [blocks[-1][0]]
        best = {n: v for n, v in blocks}
        out = [f'<value name="{n}">\n{self.improve(best[n], user, "opro" if i == 0 else f"opro:{n}", n)}'
               "\n</value>" for i, n in enumerate(names[::-1]) if n in best]
        return "\n".join(out[::-1])


def _insert(lines: list[str], new: list[str]) -> str:
    """Instructions go after the existing ones, before the first line that holds a field."""
    at = next((i for i, ln in enumerate(lines) if "{{" in ln or "{%" in ln), len(lines))
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    return "\n".join(lines[:at] + new + lines[at:])
