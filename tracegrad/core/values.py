"""Values that flow through the graph and are not plain text.

They live in ``core`` so rendering and shortening can recognise them without
importing the LLM layer; ``tracegrad.llm.base`` re-exports them for old importers.
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Image:
    """An image value: bytes or a file path. Sent to multimodal models as a data URL."""

    data: bytes
    mime: str = "image/png"

    @classmethod
    def from_path(cls, path: str | Path) -> Image:
        p = Path(path)
        mime = mimetypes.guess_type(p.name)[0] or "image/png"
        return cls(p.read_bytes(), mime)

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:  # never dump bytes into prompts or logs
        return f"<Image {self.mime} {len(self.data)} bytes>"


def has_images(value: object) -> bool:
    """Whether ``value`` is an image or a list/tuple holding one (content that has parts)."""
    return isinstance(value, Image) or (
        isinstance(value, list | tuple) and any(isinstance(v, Image) for v in value))


__all__ = ["Image", "has_images"]
