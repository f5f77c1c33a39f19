"""Reading the names a model wrote back: which reply key means which of our names.

Backward asks for feedback per input key (``system``, ``#2.input``), the trace and OPRO
optimizers ask for values per parameter name (``qa.system``, ``post.__code__``). Models
copy those names imperfectly: other case, backticks, a dropped module prefix, ``#n``
suffix or ``#`` sign. One matcher serves every caller, so a reply is read the same way
wherever it comes from: forgiving about the form of a name, strict about its identity --
a key that could mean two names, or that repeats one already given, is rejected with a
reason rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable


def _norm(s: str) -> str:
    return str(s).strip().strip("`'\"").strip().lower()


def _forms(name: str) -> set[str]:
    """The ways a model plausibly writes a name: full, without prefixes, without a
    ``#n`` suffix or a leading ``#``."""
    n = _norm(name)
    out = {n}
    if n.startswith("#"):
        out.add(n[1:])  # a run key such as "#2.input" written as "2.input"
    base = n.split("#", 1)[0]
    out.add(base)
    for cut in (".__code__", "__code__"):
        if base.endswith(cut) and len(base) > len(cut):
            out.add(base[: -len(cut)].rstrip("."))
    for sep in (".", ":", "/"):  # every tail: a.b.c -> b.c, c
        for form in list(out):
            parts = form.split(sep)
            out.update(sep.join(parts[i:]) for i in range(1, len(parts)))
    out.discard("")
    out.discard("__code__")
    return out


def match_keys(keys: Iterable[str], names: Iterable[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Map reply keys to names.

    In three rounds, each only for the keys the previous ones left: the exact name
    (ignoring case and quotes); a key that is one of a name's short forms, or a name that
    is one of the key's; any short form in common. Returns
    ``(matched key -> name, [(key, why it was not used)])``.
    """
    names = list(names)
    matched: dict[str, str] = {}
    taken: dict[str, str] = {}
    rejected: list[tuple[str, str]] = []
    by_norm = {_norm(n): n for n in names}
    rest = []
    for k in keys:  # exact and case-insensitive matches first: they win over aliases
        if k in names or _norm(k) in by_norm:
            name = k if k in names else by_norm[_norm(k)]
            if name in taken:
                rejected.append((k, f"duplicate of key {taken[name]!r} for parameter {name!r}"))
                continue
            matched[k], taken[name] = name, k
        else:
            rest.append(k)
    forms = {n: _forms(n) for n in names}
    for k in rest:
        kf = _forms(k)
        cands = [n for n in names if _norm(k) in forms[n] or _norm(n) in kf] \
            or [n for n in names if kf & forms[n]]
        if len(cands) == 1 and cands[0] not in taken:
            matched[k], taken[cands[0]] = cands[0], k
        elif len(cands) == 1:
            rejected.append((k, f"duplicate of key {taken[cands[0]]!r} for parameter {cands[0]!r}"))
        elif cands:
            rejected.append((k, f"ambiguous: could be any of {', '.join(cands)}"))
        else:
            rejected.append((k, f"no parameter of that name (known: {', '.join(names)})"))
    return matched, rejected


__all__ = ["match_keys"]
