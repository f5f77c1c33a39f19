"""Prompty files (``.prompty``), read as the Prompty specification (2.x) defines them.

The front matter names the model (``model.id``, ``model.provider``), its sampling options
(``model.options``: ``temperature``, ``maxOutputTokens``, ``topP``, ``stopSequences``...,
sent as the OpenAI parameters), the inputs (``inputs``: a list of properties or a mapping
name -> property, with ``kind``, ``description``, ``default``, ``example``) and the
template (``template.format.kind``: jinja2 or mustache; ``strict``). Prompty 1.x names
(``model.configuration``, ``model.parameters``, ``type``, ``sample``, ``template: jinja2``)
are read too, and every other key is tolerated, as the specification requires.
``${env:VAR[:default]}`` and ``${file:path}`` are resolved for the run and never written
back (only the trainable message is). The body's role markers make the messages; what
to score and train comes from a ``tracegrad:`` mapping (:mod:`.foreign`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..frontmatter import PromptFileError, _FrontMatter, _kind, _load_yaml, _Split, _split
from .chat import choose_trainable, split_markers
from .foreign import Lines, Problems, resolve, sampling_params, tracegrad_section

# Prompty 2.x option names -> OpenAI parameters (None: no OpenAI equivalent, dropped).
# maxOutputTokens is sent as max_tokens, which tracegrad's client turns into
# max_completion_tokens for the models that want it.
OPTIONS = {"temperature": "temperature", "maxOutputTokens": "max_tokens", "topP": "top_p",
           "frequencyPenalty": "frequency_penalty", "presencePenalty": "presence_penalty",
           "seed": "seed", "stopSequences": "stop", "reasoningEffort": "reasoning_effort",
           "topK": None, "allowMultipleToolCalls": None}

_OPENAI_PROVIDERS = (None, "", "openai", "azure", "azure_openai", "foundry")


def parse_prompty(cls: Any, text: str, path: Path) -> Any:
    """A Prompty file as a chat-shaped ``PromptFile`` (``cls``); every problem of the file
    is reported together, each with its line."""
    ps = str(path)
    split, data, key_lines, lines = _read(text, ps)
    problems = Problems(ps)
    pf = cls(path=path, text=text, prefix=split.prefix, body=split.body,
             body_line=split.body_line, inputs={}, output="expected", format="prompty",
             key_lines=key_lines)
    desc = data.get("description")
    pf.description = desc.strip() if isinstance(desc, str) else ""
    _model(pf, data, lines, path.parent, problems)
    _inputs(pf, data, lines, path.parent, problems)
    section = tracegrad_section(data, lines, problems)
    section = resolve(section, path.parent, lines("tracegrad"), problems)
    read_task(pf, section, lines, problems)
    syntax, attrs = _template(data, lines, problems)
    pf.chat = split_markers(split.body, len(split.prefix), split.body_line, syntax, attrs)
    check_chat(pf, section, lines, problems)
    problems.raise_any()
    return pf


def _read(text: str, ps: str) -> tuple[_Split, dict[str, Any], dict[str, int], Lines]:
    """Front matter and body; a Prompty file may also be a body alone."""
    try:
        split = _split(text, ps)
    except PromptFileError as e:
        if e.line != 1 or "missing front matter" not in e.message:
            raise
        split = _Split(prefix="", yaml_text="", yaml_line=1, body=text, body_line=1)
    if not split.yaml_text.strip():
        return split, {}, {}, Lines(None, split.yaml_line, 1)
    data, key_lines, _ = _load_yaml(split, ps)
    root = yaml.compose(split.yaml_text, Loader=yaml.SafeLoader)
    return split, data, key_lines, Lines(root, split.yaml_line, 1)


def _model(pf: Any, data: dict[str, Any], lines: Lines, base: Path, problems: Problems
           ) -> None:
    # only what is used is resolved: an unset ${env:AZURE_KEY} in the connection is no error
    model = data.get("model")
    if isinstance(model, str):
        model = resolve(model, base, lines("model"), problems)
    if model is None:
        return
    if isinstance(model, str):
        model = {"id": model}
    if not isinstance(model, dict):
        problems.add(f"'model' must be a model id or a mapping (id, provider, options), got "
                     f"{_kind(model)}", lines("model"))
        return
    config = model.get("configuration") if isinstance(model.get("configuration"), dict) else {}
    mid = model.get("id") or config.get("azure_deployment") or config.get("model") \
        or config.get("name")
    mid = resolve(mid, base, lines("model", "id"), problems)
    provider = resolve(model.get("provider") or config.get("type"), base,
                       lines("model", "provider"), problems)
    if mid is not None and (not isinstance(mid, str) or not mid.strip()):
        problems.add(f"'model.id' must be a model name, got {_kind(mid)}", lines("model", "id"))
    elif mid:
        mid = mid.strip()
        pf.model = mid if ":" in mid else (
            f"openai:{mid}" if provider in _OPENAI_PROVIDERS else f"{provider}:{mid}")
    for key, names in (("options", OPTIONS), ("parameters", {})):  # 2.x, then 1.x
        options = resolve(model.get(key), base, lines("model", key), problems)
        if options is None:
            continue
        if not isinstance(options, dict):
            problems.add(f"'model.{key}' must be a mapping, got {_kind(options)}",
                         lines("model", key))
            continue
        pf.params.update(sampling_params(options, names, lines, ("model", key), problems))


def _inputs(pf: Any, data: dict[str, Any], lines: Lines, base: Path, problems: Problems
            ) -> None:
    raw = resolve(data.get("inputs"), base, lines("inputs"), problems)
    if raw is None:
        return
    if isinstance(raw, dict):
        items = [(k, v if isinstance(v, dict) else {"example": v}, lines("inputs", k))
                 for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(v.get("name") if isinstance(v, dict) else None, v, lines("inputs", i))
                 for i, v in enumerate(raw)]
    else:
        problems.add(f"'inputs' must be a list of properties or a mapping name -> property, "
                     f"got {_kind(raw)}", lines("inputs"))
        return
    for name, prop, line in items:
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(prop, dict):
            problems.add(f"'inputs' entries need a 'name' that is an identifier, got {name!r}",
                         line)
            continue
        desc = prop.get("description")
        pf.inputs[name] = desc.strip() if isinstance(desc, str) else ""
        if prop.get("default") is not None:
            pf.defaults[name] = prop["default"]
        sample = next((prop[k] for k in ("example", "sample") if prop.get(k) is not None), None)
        if sample is not None:
            pf.samples[name] = sample


def _template(data: dict[str, Any], lines: Lines, problems: Problems) -> tuple[str, bool]:
    """The body's syntax (jinja2 or mustache, rendered by the Handlebars subset) and
    whether marker attributes become message fields (only outside strict mode)."""
    t = data.get("template")
    if t is None or isinstance(t, str):  # a 1.x 'template: jinja2'
        kind, strict = (t or "jinja2"), True
    elif isinstance(t, dict):
        fmt = t.get("format")
        fmt = {"kind": fmt} if isinstance(fmt, str) or fmt is None else fmt
        kind = fmt.get("kind") or "jinja2" if isinstance(fmt, dict) else "jinja2"
        strict = fmt.get("strict", True) is not False if isinstance(fmt, dict) else True
    else:
        problems.add(f"'template' must be a mapping (format, parser), got {_kind(t)}",
                     lines("template"))
        return "jinja2", False
    kind = str(kind).strip().lower()
    if kind in ("jinja2", "jinja", "*", ""):
        return "jinja2", not strict
    if kind in ("mustache", "handlebars"):
        return "handlebars", not strict
    problems.add(f"template format '{kind}' is not supported (jinja2 or mustache)",
                 lines("template", "format"))
    return "jinja2", not strict


def read_task(pf: Any, section: dict[str, Any], lines: Lines, problems: Problems) -> None:
    """``tracegrad.output``, ``metric``, ``constraints``, ``optimizer_model``."""
    out = section.get("output", pf.output)
    if not isinstance(out, str) or not out.isidentifier():
        problems.add(f"'tracegrad.output' must be the name of the dataset field with the "
                     f"expected value, got {out!r}", lines("tracegrad", "output"))
    else:
        pf.output = out
    keys = {k: lines("tracegrad", k) for k in ("metric", "constraints", "optimizer_model")}
    fm = _FrontMatter(section, {}, str(pf.path), keys)
    for attr, read in (("metric", fm.metric), ("constraints", fm.constraints),
                       ("optimizer_model", lambda: fm.optional_text("optimizer_model"))):
        if attr in section:
            with problems.collect():
                setattr(pf, attr, read())


def check_chat(pf: Any, section: dict[str, Any], lines: Lines, problems: Problems) -> None:
    """The messages: trainable ones chosen, every template parsed, no answer shown."""
    if not pf.chat.pieces or not any(p.text.strip() for p in pf.chat.pieces):
        problems.add("the body (the prompt after the front matter) is empty", pf.body_line)
        return
    problem = choose_trainable(pf.chat, section.get("trainable"))
    if problem:
        problems.add(f"'tracegrad.trainable' {problem}",
                     lines("tracegrad", "trainable") if "trainable" in section
                     else pf.body_line)
    with problems.collect():
        fields = pf._all_placeholders(pf.body, str(pf.path))
        if pf.output in fields:
            problems.add(f"the template reads '{pf.output}', the expected output: that would "
                         "show the model the answer (name the dataset field with "
                         "'tracegrad.output')", pf.field_line(pf.output))
