from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackwardResult:
    """What a backward pass did: calls made, nodes visited, and anything that went wrong."""

    calls: int = 0
    nodes: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
