"""What every optimizer shares, taken once by the base class."""

from __future__ import annotations

import pytest

import tracegrad as tg
from tracegrad.testing import MockLLM


@pytest.mark.parametrize("cls", [tg.TGD, tg.TraceOptimizer, tg.OPRO])
def test_every_optimizer_takes_the_shared_options_and_rejects_unknown_ones(cls):
    p = tg.Parameter("Answer.", name="p")
    opt = cls([p], MockLLM(), constraints=["Keep it short."], history=7, max_concurrency=2)
    assert (opt.history_size, opt.max_concurrency) == (7, 2)
    assert "Keep it short." in opt.constraint_lines(p)
    with pytest.raises(TypeError, match=f"{cls.__name__} got unexpected option"):
        cls([p], MockLLM(), no_such_option=1)
