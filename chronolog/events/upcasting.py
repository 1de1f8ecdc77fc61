"""Upcasters: functions that lift an old stored payload to the current schema.

Stored events are never rewritten. When a reader meets a payload whose schema version is
older than its class's ``schema_version``, the upcasters for that type run in order
(v1→v2, v2→v3, …) on the decoded JSON object before it is converted to the class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcasterRegistry:
    """Upcasters keyed by event type and the version they upgrade *from*."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator registering ``fn`` to lift ``event_type`` from ``from_version`` by one."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = fn
            return fn

        return decorate

    def upcast(self, event_type: str, version: int, target: int, payload: Payload) -> Payload:
        """Apply every step from ``version`` up to ``target``; a missing step is an error."""
        while version < target:
            step = self._steps.get((event_type, version))
            if step is None:
                raise LookupError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
            payload = step(payload)
            version += 1
        return payload


UPCASTERS = UpcasterRegistry()


@UPCASTERS.register("TaskPaused", from_version=1)
def _task_paused_v1_to_v2(payload: Payload) -> Payload:
    """Version 1 had a free-text ``reason``; version 2 calls it ``note`` and adds ``paused_by``.

    Version-1 pauses could only come from host code, so that is who paused them.
    """
    upgraded = {k: v for k, v in payload.items() if k != "reason"}
    upgraded["note"] = payload.get("reason")
    upgraded.setdefault("paused_by", {"kind": "host", "id": None})
    return upgraded
