"""What every output of the engine (console, journal, chat, webhook) has in common.

A sink receives events that are already decided and already journaled; it only delivers
them. Each event carries both the machine record and the human line, so every sink shows
the same words and none has to know how a signal is laid out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SinkKind = Literal["signal", "consensus", "outcome"]


@dataclass(frozen=True, slots=True)
class SinkEvent:
    """One thing to deliver.

    `record` is the JSON-ready form (a `Signal.to_record()` dict, or the aggregator's or the
    outcome tracker's dict); `text` is one readable line for people.
    """

    kind: SinkKind
    record: Mapping[str, Any]
    text: str
    context: Mapping[str, Any] = field(default_factory=dict)
    """Extra facts for richer sinks that are not part of the record, e.g. `history`: the
    strategy's tracked outcomes {"tp1", "tp2", "tp3", "sl", "expired", "closed", "win_rate"}."""


class Sink(Protocol):
    """A destination for events; the engine puts each sink behind its own bounded queue."""

    name: str

    async def send(self, event: SinkEvent) -> None:
        """Deliver one event; raising marks this delivery failed without affecting other sinks."""
        ...

    async def close(self) -> None:
        """Release what the sink holds; called once at shutdown after its queue has drained."""
        ...
