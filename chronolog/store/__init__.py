"""The event log: the store contract, the SQLite store (default) and an in-memory store."""

from chronolog.store.base import ANY_VERSION, NO_STREAM, AppendOutcome, AppendRequest, EventStore
from chronolog.store.memory import InMemoryEventStore
from chronolog.store.sqlite import SQLiteEventStore

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "AppendOutcome",
    "AppendRequest",
    "EventStore",
    "InMemoryEventStore",
    "SQLiteEventStore",
]
