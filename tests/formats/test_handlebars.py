"""The Handlebars subset: the same text as Dotprompt's Handlebars, refusals with the
line, and bounded work."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tracegrad.formats import handlebars as hb

CASES: list[tuple[str, dict[str, Any]]] = [
    ("Hi {{name}}!", {"name": "Ann"}),
    ("{{#if name}}\nHello {{name}}\n{{else}}\nnobody\n{{/if}}\nend", {"name": ""}),
    ("{{#if a}}A{{else if b}}B{{else}}C{{/if}}", {"a": 0, "b": 1}),
    ("{{#if a includeZero=true}}zero shows{{/if}}", {"a": 0}),
    ("{{#each items}}\n- {{this}} {{@index}} {{@first}} {{@last}}\n{{/each}}",
     {"items": ["x", "y"]}),
    ("{{#each items as |it i|}}{{i}}={{it.n}}/{{../top}};{{/each}}",
     {"items": [{"n": 1}, {"n": 2.0}], "top": True}),
    ("{{#each m}}{{@key}}:{{this}} {{/each}}{{#each none}}x{{else}}empty{{/each}}",
     {"m": {"a": 1, "b": [1, 2]}, "none": []}),
    ("{{#with u}}{{name}} {{../x}}{{/with}}", {"u": {"name": "Z"}, "x": 3}),
    ("  {{! comment }}\nA {{~ name ~}} B\n{{!-- long }} --}}\nC", {"name": "n"}),
    ("{{json obj}} {{json obj indent=2}}", {"obj": {"a": [1, "x"], "b": None}}),
    ("{{#unless flag}}no{{/unless}} {{{raw}}} {{&raw}} {{raw}}", {"flag": False, "raw": "<b>"}),
    ("{{#ifEquals a b}}same{{else}}diff{{/ifEquals}}{{#unlessEquals a 2}}!{{/unlessEquals}}",
     {"a": 1, "b": 1}),
    ("{{items.[1]}} {{u.name}} {{@root.x}} [{{missing}}] {{obj}}",
     {"items": [1, 2], "u": {"name": "q"}, "x": "r", "obj": {"k": 1}}),
    ("    {{#each items}}\n    * {{.}}\n    {{/each}}\n", {"items": [1, 1.5, True]}),
    ("\\{{name}} {{name}}", {"name": "v"}),
    ('{{role "system"}}Be brief.{{role "user"}}{{media url=u contentType="image/png"}}'
     "{{history}}{{section \"code\"}}", {"u": "https://x/y.png"}),
]


@pytest.mark.parametrize(("source", "data"), CASES)
def test_renders_as_dotprompts_handlebars(source: str, data: dict[str, Any]) -> None:
    pytest.importorskip("dotpromptz")
    from dotpromptz._helpers import register_all_helpers
    from dotpromptz_handlebars import EscapeFunction, Handlebars

    ref = Handlebars(escape_fn=EscapeFunction.NO_ESCAPE)  # as Dotprompt sets it
    register_all_helpers(ref)
    assert hb.render(source, data) == ref.compile(source)(data)


@pytest.mark.parametrize(("source", "line", "says"), [
    ("a\n{{> partial}}", 2, "partials"),
    ("{{#if x}}\n\n{{/each}}", 3, "closes '{{#if}}' opened on line 1"),
    ("x\n{{#each items}}", 2, "is never closed"),
    ("{{lookup a b}}", 1, "unknown helper 'lookup'"),
    ("{{#custom a}}{{/custom}}", 1, "unknown block helper '#custom'"),
    ("{{json (upper a)}}", 1, "subexpressions"),
    ("{{/if}}", 1, "closes no open block"),
    ("a {{else}}", 1, "outside a block"),
    ("{{a b=}}", 1, "with no value"),
    ("{{a..b!}}", 1, "not a valid name"),
    ("{{{{raw}}}}x{{{{/raw}}}}", 1, "raw blocks"),
    ("{{name", 1, "unclosed tag"),
])
def test_refuses_what_is_outside_the_subset_with_its_line(source: str, line: int,
                                                          says: str) -> None:
    with pytest.raises(hb.HandlebarsError) as e:
        hb.parse(source)
    assert e.value.lineno == line and says in e.value.message


def test_values_are_data_never_code() -> None:
    # a path only looks up keys and list items: no attribute, no call
    assert hb.render("[{{x.__class__}}][{{s.upper}}][{{l.[0]}}]", {"x": 1, "s": "a", "l": [2]}
                     ) == "[][][2]"
    with pytest.raises(hb.HandlebarsError):
        hb.parse("{{#each (lookup x)}}{{/each}}")


def test_render_is_bounded() -> None:
    nested = "{{#each a}}{{#each ../a}}{{#each ../../a}}x{{/each}}{{/each}}{{/each}}"
    start = time.monotonic()
    with pytest.raises(hb.HandlebarsError, match="steps|longer than|characters"):
        hb.render(nested, {"a": list(range(200))})
    assert time.monotonic() - start < 5
    with pytest.raises(hb.HandlebarsError, match="nested"):
        hb.parse("{{#if a}}" * 60 + "{{/if}}" * 60)


def test_placeholders_are_the_root_fields() -> None:
    src = ("{{name}} {{user.email}} {{#each items as |it|}}{{it.x}} {{title}} {{../top}}"
           "{{/each}}{{#with cfg}}{{deep}}{{@root.r}}{{/with}}{{#if flag}}{{json data}}{{/if}}"
           "{{media url=photo}}{{@index}}{{this}}")
    assert hb.placeholders(src) == {"name", "user", "items", "top", "cfg", "r", "flag", "data",
                                    "photo"}


def test_uses_handlebars_finds_the_first_construct_and_its_line() -> None:
    assert hb.uses_handlebars("a {{ x }}\n{% if y %}{% endif %}") is None
    assert hb.uses_handlebars("a {{ role }}\nb {{#if y}}") == ("{{#", 2)
    assert hb.uses_handlebars('{{role "system"}}') == ("{{role", 1)
