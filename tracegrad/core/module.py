"""Module: group parameters the PyTorch way (parameters(), state_dict(), load_state_dict())."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .variable import Parameter


class Module:
    """Subclass and define ``forward``; parameters are found in attributes, recursively.

    Attributes may be Parameters, Modules, ops that own parameters (``LLMCall``,
    ``@tg.op(trainable=True)`` functions), or lists/dicts of those.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        yield from _walk(self, prefix, seen, set())

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters() if p.requires_grad]

    def zero_grad(self) -> None:
        for _, p in self.named_parameters():
            p.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        return {name: p.value for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        params = dict(self.named_parameters())
        unknown = set(state) - set(params)
        missing = set(params) - set(state)
        if strict and (unknown or missing):
            raise KeyError(
                f"state_dict mismatch: unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        for name, value in state.items():
            if name in params:
                params[name].value = value


def _walk(obj: Any, prefix: str, seen: set[int], visiting: set[int]) -> Iterator[tuple[str, Parameter]]:
    if id(obj) in visiting:
        return
    if isinstance(obj, Parameter):
        if id(obj) not in seen:
            seen.add(id(obj))
            yield prefix.rstrip(".") or obj.name, obj
        return
    visiting.add(id(obj))
    try:
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from _walk(v, f"{prefix}{k}.", seen, visiting)
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                yield from _walk(v, f"{prefix}{i}.", seen, visiting)
        elif isinstance(obj, Module) or hasattr(obj, "parameters") and hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                if k.startswith("_") or k in ("llm", "engine", "inner"):
                    continue
                if isinstance(v, Parameter | Module | list | tuple | dict) or hasattr(v, "parameters"):
                    yield from _walk(v, f"{prefix}{k}.", seen, visiting)
    finally:
        visiting.discard(id(obj))
