"""Tools from functions: the schema and description a model is shown, and argument checks."""

from __future__ import annotations

from typing import Literal

import pytest

import tracegrad as tg
from tracegrad.ops.tools import parse_docstring


def test_schema_comes_from_type_hints_defaults_and_the_docstring():
    def search(query: str, limit: int = 5, order: Literal["new", "old"] = "new") -> list[str]:
        """Search the archive.

        Returns matching titles.

        Args:
            query: words to look for
            limit: how many titles
                at most
        """
        return []

    t = tg.Tool(search)
    spec = t.spec()["function"]
    assert spec["name"] == "search"
    assert spec["description"] == "Search the archive.\n\nReturns matching titles."
    props = spec["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "words to look for"}
    assert props["limit"] == {"type": "integer", "default": 5,
                              "description": "how many titles at most"}
    assert props["order"]["enum"] == ["new", "old"]
    assert spec["parameters"]["required"] == ["query"]
    assert "'title'" not in str(spec["parameters"])  # pydantic's generated titles are noise


def test_sphinx_style_params_are_read_too():
    summary, args = parse_docstring("Add.\n\n:param a: first\n:param int b: second\n")
    assert summary == "Add." and args == {"a": "first", "b": "second"}


def test_description_is_a_trainable_parameter_used_by_the_next_spec():
    @tg.tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert isinstance(add.description, tg.Parameter) and add.description.requires_grad
    assert add.parameters() == [add.description]
    add.description.value = "Add two whole numbers; use it for every sum."
    assert add.spec()["function"]["description"] == add.description.value
    assert add(2, 3) == 5  # still callable as the function
    frozen = tg.tool(name="echo", trainable=False)(lambda x: x)
    assert frozen.parameters() == []


def test_arguments_are_validated_before_the_function_runs():
    calls = []

    @tg.tool
    def add(a: int, b: int = 1) -> int:
        calls.append((a, b))
        return a + b

    assert add.bind('{"a": "2"}') == {"a": 2, "b": 1}  # lax, as pydantic coerces
    for bad, why in (('{"a": 2', "not valid JSON"), ("[1, 2]", "JSON object"),
                     ('{"b": 2}', "a: Field required"), ('{"a": 1, "c": 3}', "c: Extra")):
        with pytest.raises(tg.ToolArgumentsError, match=why):
            add.bind(bad)
    assert calls == []


def test_functions_a_model_cannot_call_are_refused_at_definition():
    with pytest.raises(TypeError, match=r"\*args"):
        tg.Tool(lambda *xs: xs, name="many")
    with pytest.raises(ValueError, match="letters, digits.*pass name="):
        tg.Tool(lambda: 1)
    with pytest.raises(ValueError, match="two tools are named"):
        tg.Agent(tg.testing.MockLLM(), tools=[tg.Tool(lambda: 1, name="a"),
                                             tg.Tool(lambda: 2, name="a")])
