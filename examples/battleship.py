"""Battleship: a policy learned as code from game outcomes (the Trace paper's Battleship).

``policy(board)`` is ``@tg.op(trainable=True)``: its source is the Parameter. Each step
plays seeded games on an 8x8 board (ships of 4, 3, 3 and 2 cells placed by a seeded RNG),
calling the policy for every shot; a rewritten policy runs in tracegrad's sandbox. The
outcome of each game -- shots taken, repeated shots, invalid moves, a crash inside the
sandbox -- is the feedback, and TraceOptimizer, which sees the trace of the calls, rewrites
the source in one call. The score of a game is 1 when every shot hits and 0 when it takes
all 64 shots (or is lost); a policy's score is the mean over the games. The best policy
seen is kept.

Runs offline by default on a SCRIPTED MockLLM: its "optimizer" replies with the next of a
fixed list of policies (a hunt/target policy with an off-by-one bug, the bug fixed, then
hunt on a checkerboard parity with line-following targeting), so the gains come from the
scripted proposals; offline, the point is that the loop -- games, feedback, the
optimizer's request, parsing and checking its reply, sandboxed runs -- really runs. To use
a real model:

    python examples/battleship.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass, field

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.optim import TraceOptimizer
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

SIZE = 8
SHIPS = (4, 3, 3, 2)
MAX_WASTED = 3  # invalid or repeated shots that lose a game (a stuck policy must not loop)
TASK = (
    f"policy(board) plays Battleship on a {SIZE}x{SIZE} board with ships of {SHIPS} cells. "
    "board is a list of strings, one per row: '.' not fired at, 'o' miss, 'X' hit on a ship "
    "not yet sunk, '#' part of a sunk ship. It returns [row, col] (0-based) of an unfired "
    f"cell. Sink every ship in as few shots as possible; {MAX_WASTED} invalid or repeated "
    "shots lose the game."
)


@tg.op(trainable=True)
def policy(board: list[str]) -> list[int]:
    """Choose the next cell to fire at, as [row, col]."""
    unknown = [(r, c) for r, row in enumerate(board) for c, ch in enumerate(row) if ch == "."]
    fired = sum(len(row) - row.count(".") for row in board)
    r, c = unknown[(fired * 7919 + 104729) % len(unknown)]  # pseudo-random, no imports
    return [r, c]


# -- the game: real, seeded -----------------------------------------------------------------

def place_ships(seed: int) -> list[set[tuple[int, int]]]:
    """Ships at random non-overlapping places, the same for the same seed."""
    rng = random.Random(seed)
    ships: list[set[tuple[int, int]]] = []
    taken: set[tuple[int, int]] = set()
    for length in SHIPS:
        while True:
            down = rng.random() < 0.5
            r = rng.randrange(SIZE - (length - 1 if down else 0))
            c = rng.randrange(SIZE - (0 if down else length - 1))
            cells = {(r + i, c) if down else (r, c + i) for i in range(length)}
            if not cells & taken:
                ships.append(cells)
                taken |= cells
                break
    return ships


@dataclass
class Game:
    """One game's state and what happened in it (the feedback is made from this)."""

    seed: int
    ships: list[set[tuple[int, int]]]
    shots: set[tuple[int, int]] = field(default_factory=set)
    fired: int = 0
    repeated: int = 0
    invalid: list[str] = field(default_factory=list)
    follow_ups: int = 0  # shots fired next to an unsunk hit
    chances: int = 0  # shots taken while an unsunk hit was on the board
    error: str = ""

    def board(self) -> list[str]:
        sunk = {cell for ship in self.ships if ship <= self.shots for cell in ship}
        ship_cells = {cell for ship in self.ships for cell in ship}
        def mark(cell: tuple[int, int]) -> str:
            if cell not in self.shots:
                return "."
            return "#" if cell in sunk else "X" if cell in ship_cells else "o"
        return ["".join(mark((r, c)) for c in range(SIZE)) for r in range(SIZE)]

    @property
    def won(self) -> bool:
        return all(ship <= self.shots for ship in self.ships)

    @property
    def over(self) -> bool:
        wasted = self.repeated + len(self.invalid)
        return self.won or bool(self.error) or wasted >= MAX_WASTED or self.fired >= SIZE * SIZE

    def fire(self, move: object) -> None:
        self.fired += 1
        board = self.board()
        hits = [(r, c) for r in range(SIZE) for c in range(SIZE) if board[r][c] == "X"]
        ok = (isinstance(move, list | tuple) and len(move) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in move))
        if not ok or not all(0 <= v < SIZE for v in move):
            self.invalid.append(json.dumps(move) if _jsonable(move) else repr(move))
            return
        cell = (move[0], move[1])
        if hits:
            self.chances += 1
            self.follow_ups += any(abs(cell[0] - r) + abs(cell[1] - c) == 1 for r, c in hits)
        if cell in self.shots:
            self.repeated += 1
        self.shots.add(cell)

    @property
    def score(self) -> float:
        if not self.won:
            return 0.0
        best, worst = sum(SHIPS), SIZE * SIZE
        return max(0.0, (worst - self.fired) / (worst - best))

    def describe(self) -> str:
        head = f"game seed {self.seed}: "
        if self.error:
            head += f"lost on shot {self.fired + 1}: {self.error}"
        elif self.won:
            head += f"sank all {len(SHIPS)} ships in {self.fired} shots"
        else:
            why = (f"{MAX_WASTED} invalid or repeated shots" if self.fired < SIZE * SIZE
                   else "out of shots")
            head += (f"lost after {self.fired} shots ({why}), "
                     f"{sum(s <= self.shots for s in self.ships)} of {len(SHIPS)} ships sunk")
        return (f"{head} (a perfect game takes {sum(SHIPS)}, firing at every cell {SIZE * SIZE}); "
                f"score {self.score:.2f}; repeated shots {self.repeated}; invalid moves "
                f"{len(self.invalid)}{' ' + ', '.join(self.invalid[:3]) if self.invalid else ''}; "
                f"shots next to an unsunk hit when there was one: {self.follow_ups}/{self.chances}")


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def play(seed: int) -> tuple[Game, tg.Variable]:
    """One game with the current policy; returns it and its loss (the outcome as feedback)."""
    game = Game(seed, place_ships(seed))
    last: tg.Variable | None = None
    while not game.over:
        board = tg.Variable(game.board(), role="board before the shot")
        try:
            last = policy(board)
        except tg.ExecutionError as e:  # a crash or timeout in the sandbox is feedback too
            game.error = str(e)
            return game, e.variable
        game.fire(last.value)
    outcome = tg.MetricLoss(lambda _move, _exp: (game.score, game.describe()), name="game_outcome")
    return game, outcome(last)


def evaluate(seeds: list[int]) -> tuple[tg.Variable, float, list[Game]]:
    games, losses = zip(*(play(s) for s in seeds), strict=True)
    return tg.aggregate(list(losses)), sum(g.score for g in games) / len(games), list(games)


# -- the offline stand-in for a model: a fixed list of policies, in order -------------------

HUNT_TARGET_BUGGY = '''def policy(board):
    """Target: fire next to a hit of an unsunk ship. Hunt: otherwise the first unfired cell."""
    for r, row in enumerate(board):
        for c, ch in enumerate(row):
            if ch == "X":
                for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    if board[r + dr][c + dc] == ".":
                        return [r + dr, c + dc]
    for r, row in enumerate(board):
        for c, ch in enumerate(row):
            if ch == ".":
                return [r, c]
'''

HUNT_TARGET = HUNT_TARGET_BUGGY.replace(
    '                    if board[r + dr][c + dc] == ".":',
    '                    rr, cc = r + dr, c + dc\n'
    '                    if 0 <= rr < len(board) and 0 <= cc < len(row) and board[rr][cc] == ".":',
).replace("return [r + dr, c + dc]", "return [rr, cc]")

PARITY_HUNT_TARGET = '''def policy(board):
    """Target: extend a line of unsunk hits, else fire next to one. Hunt: only one colour
    of the checkerboard (every ship covers both colours), nearest the centre first."""
    n = len(board)

    def unfired(r, c):
        return 0 <= r < n and 0 <= c < n and board[r][c] == "."

    hits = [(r, c) for r in range(n) for c in range(n) if board[r][c] == "X"]
    steps = ((0, 1), (1, 0), (0, -1), (-1, 0))
    for r, c in hits:
        for dr, dc in steps:
            if (r - dr, c - dc) in hits:
                k = 1
                while (r + k * dr, c + k * dc) in hits:
                    k += 1
                if unfired(r + k * dr, c + k * dc):
                    return [r + k * dr, c + k * dc]
    for r, c in hits:
        for dr, dc in steps:
            if unfired(r + dr, c + dc):
                return [r + dr, c + dc]
    cells = [(r, c) for r in range(n) for c in range(n) if (r + c) % 2 == 0 and unfired(r, c)]
    cells = cells or [(r, c) for r in range(n) for c in range(n) if unfired(r, c)]
    middle = (n - 1) / 2
    r, c = min(cells, key=lambda p: abs(p[0] - middle) + abs(p[1] - middle))
    return [r, c]
'''

PROPOSALS = [
    ("hits are not followed up: fire next to a hit until its ship sinks, hunt in order "
     "otherwise", HUNT_TARGET_BUGGY),
    ("the neighbour check reads past the board's edge: check the bounds first", HUNT_TARGET),
    ("hunting every cell wastes shots: hunt one checkerboard colour from the centre, and "
     "follow a line of hits", PARITY_HUNT_TARGET),
]


def mock_llm() -> MockLLM:
    """Each optimizer request gets the next policy of PROPOSALS (then no change)."""
    queue = list(PROPOSALS)

    def reply(request: Request) -> str:
        if request.purpose != "optimizer":
            raise AssertionError(f"unexpected request: {request.purpose}")
        name = re.search(r"^### (\S+__code__)$", request_text(request), re.M).group(1)
        if not queue:
            return json.dumps({"reasoning": "SCRIPTED: no proposals left", "values": {}})
        reason, source = queue.pop(0)
        return json.dumps({"reasoning": f"SCRIPTED: {reason}", "values": {name: source}})

    return MockLLM(reply)


def summary(score: float, games: list[Game]) -> str:
    shots = sum(g.fired for g in games) / len(games)
    lost = sum(not g.won for g in games)
    return f"score={score:.3f} mean_shots={shots:.1f} games_lost={lost}/{len(games)}"


def train(engine, steps: int, seeds: list[int]) -> tuple[float, float, str]:
    """The loop: play, backward the outcomes, one TraceOptimizer step; keep the best."""
    optimizer = TraceOptimizer(policy.parameters(), engine)
    optimizer.set_task(TASK)
    loss, score, games = evaluate(seeds)
    first, best = score, (score, policy.code.value)
    print(f"before: {summary(score, games)}")
    for step in range(1, steps + 1):
        optimizer.record_score(score)
        optimizer.zero_grad()
        loss.backward(propagator=optimizer.propagator())
        result = optimizer.step()
        for event in result.events:
            print(f"step {step} event: {event['event']}: {event['detail']}")
        if not result.updated:
            print(f"step {step}: the optimizer changed nothing; stopping")
            break
        loss, score, games = evaluate(seeds)
        print(f"step {step}: {summary(score, games)}")
        for g in games:
            print(f"  {g.describe()}")
        if score > best[0]:
            best = (score, policy.code.value)
    policy.code.value = best[1]
    return first, best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps at most")
    ap.add_argument("--games", type=int, default=3, help="seeded games per evaluation")
    args = ap.parse_args(argv)
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM -- the policies are SCRIPTED, the games and their "
              "scores are real; pass --model to use a real model)")
    seeds = list(range(1, args.games + 1))
    first, best, source = train(engine, args.steps, seeds)
    print(f"after: score={best:.3f} (best policy; before: score={first:.3f})\n{source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
