"""Molecule optimization: a SMILES string improved against RDKit scores (TextGrad's molecule setting).

The molecule itself is the Parameter. RDKit scores it for real: drug-likeness (QED), a
logP inside a target range, and a penalty for rings larger than six atoms or too many heavy
atoms. The metric's explanation -- the scores and what to change -- is the feedback, and
TGD rewrites the SMILES. A SMILES RDKit cannot parse is feedback too (score 0 and the parse
error), never a crash. The best molecule seen is kept.

Needs RDKit: ``pip install 'tracegrad[chem]'`` (or ``pip install rdkit``).

Runs offline by default on a SCRIPTED MockLLM: its "optimizer" proposes the next SMILES of a
fixed list of candidates (one of them deliberately malformed), so the gains come from the
scripted proposals; offline, the point is that the loop -- scoring, feedback, TGD's request
and the parsing of its reply -- really runs. To use a real model:

    python examples/molecule.py --model openai:gpt-4o-mini [--base-url URL]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

import tracegrad as tg
from tracegrad.llm.base import Request
from tracegrad.optim import TGD
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

START = "CCCCCCc1ccccc1"  # hexylbenzene: a greasy, barely drug-like fragment
LOGP_RANGE = (1.0, 3.0)
MAX_RING = 6
MAX_HEAVY = 30
TASK = (
    "Propose one drug-like molecule as a single SMILES string (no spaces, no explanation "
    "between the tags). The score is 0.6 * QED + 0.4 * (logP inside "
    f"{LOGP_RANGE}), minus a penalty for rings over {MAX_RING} atoms and for more than "
    f"{MAX_HEAVY} heavy atoms; an unparseable SMILES scores 0."
)
INSTALL_HINT = ("error: examples/molecule.py needs RDKit, which is not installed; install it "
                "with: pip install 'tracegrad[chem]'  (or: pip install rdkit)")


# -- the objective: real RDKit scores -------------------------------------------------------

@dataclass
class Assessment:
    """What RDKit says about one SMILES; ``problems`` are the feedback's "what to change"."""

    score: float
    qed: float = 0.0
    logp: float = 0.0
    heavy_atoms: int = 0
    largest_ring: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.heavy_atoms == 0:
            return f"score={self.score:.3f} (INVALID SMILES)"
        return (f"score={self.score:.3f} QED={self.qed:.3f} logP={self.logp:.2f} "
                f"heavy_atoms={self.heavy_atoms} largest_ring={self.largest_ring}")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def parse_smiles(smiles: str):
    """(mol, None) or (None, RDKit's parse error): the error is what the optimizer must read,
    so it is captured from RDKit's log instead of being printed on stderr."""
    from rdkit import Chem, rdBase

    rdBase.LogToPythonLogger()
    log = logging.getLogger("rdkit")
    saved, capture = log.handlers[:], _Capture()
    log.handlers, log.propagate = [capture], False
    try:
        mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    finally:
        log.handlers = saved
    if mol is not None:
        return mol, None
    lines = [ln.split("] ", 1)[-1] for ln in capture.lines if "Error" in ln or "~" in ln]
    return None, "; ".join(lines[:2]) or "empty or unreadable SMILES"


def _logp_score(logp: float) -> float:
    lo, hi = LOGP_RANGE
    distance = max(lo - logp, logp - hi, 0.0)
    return max(0.0, 1.0 - distance / 2.0)


def assess(smiles: str) -> Assessment:
    """0.6 * QED + 0.4 * (logP inside LOGP_RANGE, falling off over 2 units outside), minus
    0.1 per ring atom beyond MAX_RING in the largest ring and 0.02 per heavy atom over
    MAX_HEAVY; clamped to [0, 1]."""
    from rdkit.Chem import QED, Crippen

    mol, error = parse_smiles(smiles)
    if mol is None:
        return Assessment(0.0, problems=[f"RDKit cannot parse this SMILES ({error}); "
                                         "write a valid SMILES: balanced parentheses, every "
                                         "ring-closure digit used exactly twice, valid valences"])
    qed, logp = QED.qed(mol), Crippen.MolLogP(mol)
    heavy = mol.GetNumHeavyAtoms()
    largest = max((len(r) for r in mol.GetRingInfo().AtomRings()), default=0)
    penalty = 0.1 * max(0, largest - MAX_RING) + 0.02 * max(0, heavy - MAX_HEAVY)
    score = min(1.0, max(0.0, 0.6 * qed + 0.4 * _logp_score(logp) - penalty))
    problems = []
    if logp > LOGP_RANGE[1]:
        problems.append(f"logP {logp:.2f} is above the target range {LOGP_RANGE}: replace "
                        "alkyl chains or halogens with polar groups (amide, hydroxyl, pyridine N)")
    elif logp < LOGP_RANGE[0]:
        problems.append(f"logP {logp:.2f} is below the target range {LOGP_RANGE}: add a "
                        "hydrophobic group (methyl, chloro, an aromatic ring)")
    if qed < 0.9:
        problems.append(f"QED {qed:.3f} is low: aim for a drug-like scaffold with a few "
                        "hydrogen-bond donors and acceptors, an amide or heteroaromatic ring, "
                        "and no long flexible chains")
    if largest > MAX_RING:
        problems.append(f"the largest ring has {largest} atoms: rings over {MAX_RING} atoms "
                        "are penalised; use five- or six-membered rings")
    if heavy > MAX_HEAVY:
        problems.append(f"{heavy} heavy atoms is over {MAX_HEAVY}: make the molecule smaller")
    return Assessment(score, qed, logp, heavy, largest, problems)


def metric(smiles: str, _expected: object = None) -> tuple[float, str]:
    """The feedback text: the measured scores, then what to change (or that nothing must)."""
    a = assess(str(smiles).strip())
    todo = " ".join(f"- {p}." for p in a.problems) or "No change needed: every objective is met."
    return a.score, f"RDKit: {a.summary()}. {todo}"


# -- the offline stand-in for a model: a fixed list of proposals, in order --------------------

PROPOSALS = [
    ("a hydroxyl makes the fragment less greasy", "CCCCCCc1ccc(O)cc1"),
    ("a lactam ring on the phenol replaces the chain", "O=C1CCCCCCCN1c1ccc(O)cc1"),
    ("an acetamide instead of the long chain, with a short ether",  # malformed on purpose
     "CC(=O)Nc1ccc(OCC)cc1("),
    ("the same molecule with the stray parenthesis removed", "CC(=O)Nc1ccc(OCC)cc1"),
    ("an aryl amide with a pyridine ring", "O=C(Nc1ccc(Cl)cc1)c1ccncc1"),
    ("a methylpiperazine instead of the chlorine adds polarity and drug-likeness",
     "CN1CCN(CC1)c1ccc(NC(=O)c2ccncc2)cc1"),
]


def mock_llm() -> MockLLM:
    """Each optimizer request gets the next proposal of PROPOSALS (then the current value)."""
    queue = list(PROPOSALS)

    def reply(request: Request) -> str:
        if request.purpose != "optimizer":
            raise AssertionError(f"unexpected request: {request.purpose}")
        text = request_text(request)
        if not queue:
            current = text.split("<current_value>\n", 1)[1].split("\n</current_value>", 1)[0]
            return f"SCRIPTED: no proposals left.\n<new_value>\n{current}\n</new_value>"
        reason, smiles = queue.pop(0)
        return f"SCRIPTED proposal: {reason}.\n<new_value>\n{smiles}\n</new_value>"

    return MockLLM(reply)


def optimize(engine, steps: int) -> tuple[Assessment, Assessment, str]:
    """Run TGD on the SMILES; return (first, best) assessments and the best SMILES."""
    molecule = tg.Parameter(START, role="SMILES string of a drug candidate molecule",
                            name="molecule")
    optimizer = TGD([molecule], engine)
    optimizer.set_task(TASK)
    loss_fn = tg.MetricLoss(metric, name="rdkit_objective")
    first = assess(molecule.value)
    best = (first, molecule.value)
    print(f"before: {first.summary()} smiles={molecule.value}")
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = loss_fn(molecule)
        optimizer.record_score(loss.score or 0.0, loss.value)
        loss.backward(propagator=optimizer.propagator())
        result = optimizer.step()
        for event in result.events:
            print(f"step {step} event: {event['event']}: {event['detail']}")
        now = assess(molecule.value.strip())
        print(f"step {step}: {now.summary()} smiles={molecule.value.strip()}")
        print(f"  feedback it answered: {loss.value}")
        if now.score > best[0].score:
            best = (now, molecule.value.strip())
        if not now.problems:
            print(f"step {step}: every objective is met; stopping")
            break
    return first, best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a real model, e.g. openai:gpt-4o-mini (default: offline mock)")
    ap.add_argument("--base-url", help="OpenAI-compatible server URL")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps at most")
    args = ap.parse_args(argv)
    try:
        import rdkit  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    if args.model:
        from tracegrad.llm import LLM

        engine = LLM(args.model, base_url=args.base_url)
    else:
        engine = mock_llm()
        print("(offline: scripted MockLLM -- the proposals are SCRIPTED, the RDKit scores are "
              "real; pass --model to use a real model)")
    first, best, smiles = optimize(engine, args.steps)
    print(f"after: {best.summary()} smiles={smiles}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
