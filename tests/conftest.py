"""Shared fixtures: a fake clock and a runtime on an in-memory or SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from chronolog.testing import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at 2026-03-01 12:00 UTC."""
    return FakeClock(T0)


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"
