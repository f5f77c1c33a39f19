"""Message content from templates: an image rendered through a template stays an image.

Jinja renders text, so an :class:`~tracegrad.Image` placed with ``{{ pic }}`` used to become
its placeholder text. Here each image is swapped for a unique marker before rendering and
the rendered text is cut at the markers into Chat Completions content parts.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from .. import template as tpl
from ..core.values import Image, has_images


class _Slot:
    """Stands in for an image while the template renders."""

    def __init__(self, index: int, image: Image, nonce: str) -> None:
        self.index = index
        self.mime = image.mime
        self.nonce = nonce

    def __str__(self) -> str:
        return f"\x00tg-image-{self.nonce}-{self.index}\x00"


def _swap(value: Any, images: list[Image], nonce: str) -> Any:
    if isinstance(value, Image):
        images.append(value)
        return _Slot(len(images) - 1, value, nonce)
    if isinstance(value, list | tuple) and any(isinstance(v, Image) for v in value):
        return [_swap(v, images, nonce) for v in value]
    return value


def render_content(template: str, fields: dict[str, Any]) -> str | list[dict[str, Any]]:
    """The rendered template as text, or as text and image parts when it placed images."""
    images: list[Image] = []
    nonce = secrets.token_hex(8)  # text in a field cannot forge a marker it cannot guess
    swapped = {k: _swap(v, images, nonce) for k, v in fields.items()}
    text = tpl.render(template, swapped)
    if not images:
        return text
    parts: list[dict[str, Any]] = []
    pos = 0
    for m in re.finditer(f"\x00tg-image-{nonce}-(\\d+)\x00", text):
        if text[pos:m.start()].strip():
            parts.append({"type": "text", "text": text[pos:m.start()]})
        url = images[int(m.group(1))].data_url()
        parts.append({"type": "image_url", "image_url": {"url": url}})
        pos = m.end()
    if text[pos:].strip():
        parts.append({"type": "text", "text": text[pos:]})
    return parts


__all__ = ["has_images", "render_content"]
