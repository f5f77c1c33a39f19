"""Which examples a step sees, derived from ``(seed, step)`` alone.

No sampler state is carried from step to step, so a resumed run draws the same batches
it would have drawn uninterrupted, and a report can say which examples any step used.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["minibatch"]

T = TypeVar("T")


def minibatch(data: Sequence[T], batch_size: int, seed: int, step: int) -> list[T]:
    """Step ``step``'s batch (steps count from 1): epoch-wise shuffles seeded by (seed, epoch).

    A short last batch of an epoch is topped up from the next shuffle, so every step
    sees ``min(batch_size, len(data))`` examples.
    """
    n = len(data)
    per_epoch = math.ceil(n / batch_size)
    epoch, i = divmod(step - 1, per_epoch)
    order = list(range(n))
    random.Random(f"{seed}:epoch:{epoch}").shuffle(order)
    idx = order[i * batch_size : (i + 1) * batch_size]
    if len(idx) < min(batch_size, n):
        extra = [j for j in range(n) if j not in idx]
        random.Random(f"{seed}:fill:{epoch}").shuffle(extra)
        idx += extra[: batch_size - len(idx)]
    return [data[j] for j in idx]
