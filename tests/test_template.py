"""The template sandbox's limits: what a hostile prompt file or LLM rewrite cannot do."""

from __future__ import annotations

import time

import pytest

from tracegrad import template as tpl

REFUSED_AT_LOAD = [
    ("{{ word|attr('__class__') }}", "'attr' filter"),
    ("{{ '{0.__class__}'.format(word) }}", "'.format'"),
    ("{% include 'other.txt' %}", "include"),
    ("{% extends 'base.txt' %}", "extends"),
    ("{% import 'm.txt' as m %}", "import"),
    ("{% from 'm.txt' import f %}", "fromimport"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself"),
    ("{{ word * 1000000000 }}", "too large"),
    ("{{ 9 ** 9999999 }}", "too large"),
    ("{{ d.update({'a': 1}) }}", "'.update'"),
    ("line one\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
     "nested loops"),
]


@pytest.mark.parametrize("body,why", REFUSED_AT_LOAD)
def test_dangerous_templates_are_refused_before_any_render(body: str, why: str) -> None:
    with pytest.raises(tpl.TemplateError) as e:
        tpl.placeholders(body)
    assert why in str(e.value)
    assert e.value.lineno == body.count("\n", 0, body.find("{%") if "{%" in body else 0) + 1


def test_a_refused_construct_reports_its_own_line() -> None:
    with pytest.raises(tpl.TemplateError) as e:
        tpl.placeholders("ok {{ word }}\nfine\n{{ word|attr('x') }}")
    assert e.value.lineno == 3


@pytest.mark.parametrize("body,fields", [
    ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", {"n": 100000}),
    ("{% for a in x %}{% for b in x %}{% for c in x %}.{% endfor %}{% endfor %}{% endfor %}",
     {"x": list(range(1000))}),
    ("{% macro f(n) %}{{ g(n) }}{% endmacro %}{% macro g(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
     {}),
    ("{{ range(100000)|join(word * 100000) }}", {"word": "apple"}),
    ("{{ (word * 900000)|replace('a', word * 900000) }}", {"word": "a"}),
    ("{% for i in range(90000) %}{{ word * 900000 }}{% endfor %}", {"word": "a"}),
])
def test_runaway_renders_stop_quickly_with_a_template_error(body: str, fields: dict) -> None:
    start = time.monotonic()
    with pytest.raises(tpl.TemplateError):
        tpl.render(body, fields)
    assert time.monotonic() - start < tpl.MAX_SECONDS + 1.0


def test_check_with_a_sample_row_catches_blowups_only_data_reveals() -> None:
    body = "{{ range(100000)|join(word * 100000) }}"
    tpl.check(body)  # nothing static to see
    with pytest.raises(tpl.TemplateError):
        tpl.check(body, {"word": "apple"})


def test_ordinary_templates_and_large_user_data_still_render() -> None:
    big = "x" * 5_000_000
    assert tpl.render("{{ a }}|{{ a }}", {"a": big}) == big + "|" + big
    out = tpl.render("{% for i in items %}{{ loop.index }}={{ i }};{% endfor %}{{ items|join(',') }}"
                     "{{ w|replace('a', 'b') }}", {"items": ["p", "q"], "w": "banana"})
    assert out == "1=p;2=q;p,qbbnbnb"
    assert tpl.render("{% for i in range(500) %}{% for j in range(999) %}{% endfor %}{% endfor %}ok",
                      {}) == "ok"
