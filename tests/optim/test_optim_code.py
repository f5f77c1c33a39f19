"""Trainable code: static validation of rewrites, and sandboxed execution turning into feedback."""

from __future__ import annotations

import re

import pytest

import tracegrad as tg
from tracegrad.backward import TracePropagator
from tracegrad.llm.base import Request
from tracegrad.optim import TGD
from tracegrad.optim.code import strip_fences, validate_code
from tracegrad.sandbox import Limits
from tracegrad.testing import MockLLM
from tracegrad.testing.mock import request_text

SRC = "def total(prices: list, tax: float = 0.2) -> float:\n    return sum(prices) * (1 + tax)\n"
SIG = "(prices: list, tax: float = 0.2) -> float"


def problems(src: str) -> list[str]:
    return validate_code(src, function_name="total", signature=SIG, reference=SRC)


def test_a_sound_rewrite_passes():
    assert problems(SRC) == []
    ok = ("import math\nfrom collections import Counter\n\n"
          "def total(prices: list[float], tax=0.25):\n    return math.fsum(prices) * (1 + tax)\n")
    assert problems(ok) == []


@pytest.mark.parametrize(("src", "needle"), [
    ("def total(prices, tax=0.2:\n    return 1\n", "does not parse"),
    ("def sum_all(prices, tax=0.2):\n    return 1\n", "must define the function `total`"),
    ("def total(items, tax=0.2):\n    return 1\n", "must keep its signature"),
    ("def total(prices, tax):\n    return 1\n", "must keep its signature"),
    ("def total(prices, tax=0.2, rate=1):\n    return 1\n", "must keep its signature"),
    ("async def total(prices, tax=0.2):\n    return 1\n", "not `async def`"),
    ("import os\ndef total(prices, tax=0.2):\n    return 1\n", "imports outside the allowed modules: os"),
    ("from subprocess import run\ndef total(prices, tax=0.2):\n    return 1\n", "subprocess"),
    ("def total(prices, tax=0.2):\n    import socket\n    return 1\n", "socket"),
    ("def total(prices, tax=0.2):\n    return __import__('os').getpid()\n", "`__import__` is not allowed"),
    ("def total(prices, tax=0.2):\n    return ().__class__.__bases__\n", "`__class__` is not allowed"),
])
def test_bad_rewrites_are_rejected(src, needle):
    found = problems(src)
    assert found and any(needle in p for p in found), found


def test_signature_falls_back_to_the_reference_source():
    assert validate_code("def total(a):\n    return 1\n", function_name="total",
                         signature="(x=<object object at 0x1>)", reference=SRC)
    assert not validate_code(SRC, signature=None, reference=SRC)


def test_strip_fences():
    assert strip_fences("```python\nx = 1\n```") == "x = 1"
    assert strip_fences("x = 1") == "x = 1"


def make_function():
    @tg.op(trainable=True, limits=Limits(timeout=1.0))
    def total(prices: list, tax: float = 0.2) -> float:
        """Price of a basket including tax."""
        return sum(prices) * (1 + tax)

    return total


def test_signature_change_is_rejected_and_the_code_kept():
    fn = make_function()
    original = fn.code.value
    fn.code.add_feedback("Round to cents.")
    changed = "def total(prices, tax=0.2, digits=2):\n    return round(sum(prices) * (1 + tax), digits)\n"
    llm = MockLLM([f"<new_value>{changed}</new_value>", f"<new_value>{changed}</new_value>"])
    result = TGD(fn.parameters(), llm).step()
    assert fn.code.value == original
    assert result.events[-1]["event"] == "constraint_violation"
    assert "signature" in llm.requests[1].messages[-1]["content"]
    assert fn([1, 2]).value == pytest.approx(3.6)


def test_import_os_is_rejected():
    fn = make_function()
    original = fn.code.value
    fn.code.add_feedback("Round to cents.")
    bad = "import os\ndef total(prices, tax=0.2):\n    return round(sum(prices) * (1 + tax), 2)\n"
    llm = MockLLM([f"<new_value>{bad}</new_value>"] * 2)
    result = TGD(fn.parameters(), llm).step()
    assert fn.code.value == original and llm.calls == 2
    assert "os" in result.events[-1]["detail"]


def test_infinite_loop_is_stopped_by_the_timeout_and_becomes_feedback():
    fn = make_function()
    fn.code.add_feedback("Round the total to cents.")
    looping = ("def total(prices, tax=0.2):\n    s = 0\n    while True:\n        s += 1\n"
               "    return round(sum(prices) * (1 + tax), 2)\n")
    fixed = "def total(prices, tax=0.2):\n    return round(sum(prices) * (1 + tax), 2)\n"

    def reply(req: Request) -> str:
        text = request_text(req)
        return f"<new_value>{fixed if 'timed out' in text else looping}</new_value>"

    llm = MockLLM(reply)
    opt = TGD(fn.parameters(), llm)
    opt.step()
    assert fn.code.value == looping  # statically fine: the loop is only found by running it

    with pytest.raises(tg.ExecutionError) as info:
        fn([1.0, 2.0])
    err = info.value.variable
    assert "timed out after 1 s" in err.value and err.is_objective

    opt.zero_grad()
    err.backward(propagator=TracePropagator())
    assert fn.code.grads and "timed out" in fn.code.grads[0].text

    opt.step()
    second = request_text(llm.requests[1])
    assert "timed out" in second and "while True" in second
    assert fn.code.value == fixed
    assert fn([1.0, 2.0]).value == pytest.approx(3.6)


def test_exception_in_rewritten_code_names_the_line():
    fn = make_function()
    fn.code.value = "def total(prices, tax=0.2):\n    x = 1\n    return prices[10]\n"
    with pytest.raises(tg.ExecutionError) as info:
        fn([1.0])
    text = info.value.variable.value
    assert "IndexError" in text and re.search(r"line 3", text)
