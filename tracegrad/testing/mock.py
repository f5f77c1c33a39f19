"""The mock engine, re-exported here for tests: it lives in ``tracegrad.llm.mock`` because
``model="mock"`` is a production engine choice and production code must not import test tools."""

from __future__ import annotations

from ..llm.mock import *  # noqa: F403
