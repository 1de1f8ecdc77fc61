"""Helpers for testing chronolog and code that uses it.

``FakeClock`` drives schedules without sleeping; ``EventStoreContract`` is the store
contract as a pytest suite (importing it needs pytest, so it is loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chronolog.testing.clock import FakeClock

if TYPE_CHECKING:
    from chronolog.testing.store_contract import EventStoreContract

__all__ = ["EventStoreContract", "FakeClock"]


def __getattr__(name: str) -> Any:
    if name == "EventStoreContract":
        from chronolog.testing.store_contract import EventStoreContract

        return EventStoreContract
    raise AttributeError(f"module 'chronolog.testing' has no attribute {name!r}")
