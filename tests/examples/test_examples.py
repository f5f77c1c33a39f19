"""The seed papers' showcase examples: examples/battleship.py (Trace) and examples/molecule.py
(TextGrad) run offline, exit 0, and print a final score above the initial one; the scores are
recomputed here where that is cheap, so a printed number that is not the real one fails."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HAS_RDKIT = importlib.util.find_spec("rdkit") is not None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """Both examples, run at once (battleship waits on sandboxed subprocesses, not the CPU)."""
    names = ["battleship.py"] + (["molecule.py"] if HAS_RDKIT else [])
    procs = {n: subprocess.Popen([sys.executable, str(EXAMPLES / n)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_env(),
                                 cwd=EXAMPLES.parent) for n in names}
    out = {}
    for n, p in procs.items():
        stdout, stderr = p.communicate(timeout=110)
        out[n] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def _scores(stdout: str) -> tuple[float, float]:
    before = re.search(r"^before: score=([\d.]+)", stdout, re.M)
    after = re.search(r"^after: score=([\d.]+)", stdout, re.M)
    assert before and after, stdout
    return float(before.group(1)), float(after.group(1))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_tg_seed_example_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


# -- battleship ---------------------------------------------------------------------------

def test_battleship_runs_offline_and_improves(runs):
    r = runs["battleship.py"]
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "SCRIPTED" in r.stdout
    before, after = _scores(r.stdout)
    assert after > before + 0.3, r.stdout
    # the buggy proposal ran in the sandbox: its crash and its off-board moves were outcomes
    assert "raised IndexError" in r.stdout and "invalid moves 3 [-1," in r.stdout
    assert "def policy(board):" in r.stdout.split("after: ", 1)[1]


def test_battleship_scores_are_the_games_real_outcomes():
    ex = load("battleship.py")
    seeds = [1, 2, 3]
    _, random_score, games = ex.evaluate(seeds)  # the starting policy, in-process
    assert all(g.won and 0 <= g.score < 0.2 for g in games)
    ex.policy.code.value = ex.PARITY_HUNT_TARGET  # now runs in the sandbox
    try:
        _, parity_score, games = ex.evaluate(seeds)
    finally:
        ex.policy.code.value = ex.policy.original_source
    assert all(g.won for g in games) and parity_score > random_score + 0.3
    assert all(g.repeated == 0 and not g.invalid and g.fired == len(g.shots) for g in games)


def test_battleship_boards_are_seeded_and_legal():
    ex = load("battleship.py")
    ships = ex.place_ships(7)
    assert ships == ex.place_ships(7) and ships != ex.place_ships(8)
    assert sorted(len(s) for s in ships) == sorted(ex.SHIPS)
    cells = [c for s in ships for c in s]
    assert len(cells) == len(set(cells)) and all(0 <= r < ex.SIZE and 0 <= c < ex.SIZE
                                                for r, c in cells)


def test_battleship_game_rules_score_and_describe_outcomes():
    ex = load("battleship.py")
    perfect = ex.Game(1, ex.place_ships(1))
    for cell in sorted(c for s in perfect.ships for c in s):
        perfect.fire(list(cell))
    assert perfect.won and perfect.score == 1.0 and "#" in "".join(perfect.board())
    stuck = ex.Game(1, ex.place_ships(1))
    stuck.fire([0, 0])
    for _ in range(ex.MAX_WASTED - 1):
        stuck.fire([0, 0])
    stuck.fire([9, 9])
    assert stuck.over and not stuck.won and stuck.score == 0.0
    text = stuck.describe()
    assert "repeated shots 2" in text and "invalid moves 1 [9, 9]" in text


# -- molecule ------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_RDKIT, reason="rdkit is not installed (pip install 'tracegrad[chem]')")
def test_molecule_runs_offline_and_improves_real_rdkit_scores(runs):
    from rdkit import Chem
    from rdkit.Chem import QED, Crippen

    r = runs["molecule.py"]
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "SCRIPTED" in r.stdout
    before, after = _scores(r.stdout)
    assert after > before + 0.2, r.stdout
    # an invalid SMILES was scored 0 and its parse error went back as feedback
    assert "(INVALID SMILES)" in r.stdout and "RDKit cannot parse this SMILES" in r.stdout
    final = re.search(r"^after: .*QED=([\d.]+) logP=([-\d.]+) .*smiles=(\S+)$", r.stdout, re.M)
    mol = Chem.MolFromSmiles(final.group(3))
    assert abs(QED.qed(mol) - float(final.group(1))) < 1e-3
    assert abs(Crippen.MolLogP(mol) - float(final.group(2))) < 1e-2


@pytest.mark.skipif(not HAS_RDKIT, reason="rdkit is not installed (pip install 'tracegrad[chem]')")
def test_molecule_objective_penalises_big_rings_and_reports_bad_smiles():
    ex = load("molecule.py")
    bad = ex.metric("c1ccc(cc1")
    assert bad[0] == 0.0 and "cannot parse" in bad[1] and "parentheses" in bad[1]
    ring6 = ex.assess("O=C1CCCCN1c1ccc(O)cc1")
    ring9 = ex.assess("O=C1CCCCCCCN1c1ccc(O)cc1")
    assert ring9.largest_ring == 9 and any("9 atoms" in p for p in ring9.problems)
    assert ring9.score < ring6.score


def test_molecule_without_rdkit_says_how_to_install_and_exits_2(tmp_path):
    fake = tmp_path / "rdkit"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named rdkit (test)')\n")
    r = subprocess.run([sys.executable, str(EXAMPLES / "molecule.py")], capture_output=True,
                       text=True, env=_env(PYTHONPATH=str(tmp_path)), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "pip install 'tracegrad[chem]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- --model / --base-url ------------------------------------------------------------------

@pytest.mark.parametrize("name,extra", [("battleship.py", ["--games", "1"]),
                                        ("molecule.py", [])])
def test_model_flag_uses_tracegrad_llm(name, extra, monkeypatch, capsys):
    """--model/--base-url build the engine with tracegrad.llm.LLM (here replaced by the mock)."""
    if name == "molecule.py" and not HAS_RDKIT:
        pytest.skip("rdkit is not installed")
    import tracegrad.llm

    module = load(name)
    seen = []

    def fake_llm(spec, base_url=None, **kw):
        seen.append((spec, base_url))
        return module.mock_llm()

    monkeypatch.setattr(tracegrad.llm, "LLM", fake_llm, raising=False)
    argv = ["--model", "openai:some-model", "--base-url", "http://127.0.0.1:9/v1",
            "--steps", "1", *extra]
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert seen == [("openai:some-model", "http://127.0.0.1:9/v1")]
    assert "offline" not in out and "before: score=" in out and "after: score=" in out


def _run_against(server, name: str, *extra: str, tmp_path: Path):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--model", "openai:fake-model",
         "--base-url", server.url, *extra],
        capture_output=True, text=True, timeout=100, cwd=EXAMPLES.parent,
        env=_env(TRACEGRAD_NO_CACHE="1", TRACEGRAD_CACHE_DIR=str(tmp_path)))


def test_molecule_with_model_talks_to_an_openai_compatible_server(tmp_path):
    """--model/--base-url: the real openai client, over HTTP, to a server on 127.0.0.1."""
    if not HAS_RDKIT:
        pytest.skip("rdkit is not installed")
    from tracegrad.testing import FakeOpenAIServer

    replies = ["Add an amide.\n<new_value>\nCC(=O)Nc1ccc(OCC)cc1\n</new_value>"]
    with FakeOpenAIServer(replies, default="<new_value>\nCC(=O)Nc1ccc(OCC)cc1\n</new_value>") as s:
        r = _run_against(s, "molecule.py", "--steps", "2", tmp_path=tmp_path)
        sent = [m["content"] for m in s.requests[0]["messages"]]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SCRIPTED" not in r.stdout and "smiles=CC(=O)Nc1ccc(OCC)cc1" in r.stdout
    before, after = _scores(r.stdout)
    assert after > before
    assert "CCCCCCc1ccccc1" in sent[-1] and "logP 3.81 is above the target range" in sent[-1]


def test_battleship_with_model_talks_to_an_openai_compatible_server(tmp_path):
    import json

    from tracegrad.testing import FakeOpenAIServer

    ex = load("battleship.py")
    reply = json.dumps({"reasoning": "hunt on parity", "values": {
        "policy.__code__": ex.PARITY_HUNT_TARGET}})
    with FakeOpenAIServer([reply], default='{"reasoning": "done", "values": {}}') as s:
        r = _run_against(s, "battleship.py", "--steps", "2", "--games", "1", tmp_path=tmp_path)
        sent = "\n".join(m["content"] for m in s.requests[0]["messages"])
    assert r.returncode == 0, r.stdout + r.stderr
    before, after = _scores(r.stdout)
    assert after > before + 0.3
    assert "game seed 1: sank all 4 ships" in sent and "policy.__code__" in sent
