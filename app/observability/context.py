"""Per-request facts that deeper layers fill in and the access middleware reads.

The middleware opens a fresh :class:`RequestFacts` for each request; the data plane
records which model and version served it, without knowing anything about HTTP.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestFacts:
    request_id: str = "-"
    model: str = ""
    version: str = ""


current: ContextVar[RequestFacts | None] = ContextVar("request_facts", default=None)


def note_model(name: str, version: int) -> None:
    facts = current.get()
    if facts is not None:
        facts.model, facts.version = name, str(version)


def request_id() -> str:
    facts = current.get()
    return facts.request_id if facts else "-"
