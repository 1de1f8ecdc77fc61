"""The HTTP API and the agent tools over the process engine: the same answers as over the
thread engine, served from the host while the scheduler runs in its own process.

The HTTP server runs uvicorn on a loop of its own (uvloop when installed), which gets a
connection of its own to the scheduler process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chronolog import AppContext, SchedulerModule, Settings
from chronolog.api.agent import AgentDispatcher
from chronolog.api.server import HttpServer

EVENTS = "/api/v1/scheduler/events"


def _report() -> str:
    return "built"


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerModule]:
    """A process-engine module with three tasks: two far ahead, one paused."""
    data = tmp_path_factory.mktemp("process-api") / "data"
    settings = Settings(
        data_dir=str(data), engine="process", http_port=0, log_level="error", default_timezone="UTC"
    )
    mod = SchedulerModule(settings)
    mod.register(AppContext())
    mod.service.register_function("reports.build", _report, module_id="billing")
    mod.start_blocking()
    sync = mod.service.sync
    later = datetime.now(UTC) + timedelta(days=1)
    for name in ("nightly", "weekly"):
        assert sync.schedule_event(name, "reports.build", later, module_id="billing").ok
    paused = sync.schedule_event("paused one", "reports.build", later).value
    assert sync.pause_event(paused, note="holiday").ok
    try:
        yield mod
    finally:
        mod.stop_blocking()


def test_http_lists_events_from_the_scheduler_process(module: SchedulerModule) -> None:
    """GET /api/v1/scheduler/events answers from the scheduler process, filters included."""
    with (
        HttpServer(module.service, module.settings) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        everything = client.get(EVENTS)
        assert everything.status_code == 200, everything.text
        assert everything.json()["total"] == 3
        billing = client.get(EVENTS, params={"module_id": "billing"}).json()
        assert sorted(e["name"] for e in billing["events"]) == ["nightly", "weekly"]
        paused = client.get(EVENTS, params={"status": "paused"}).json()
        assert [e["name"] for e in paused["events"]] == ["paused one"]
        missing = client.get(f"{EVENTS}/no-such-task")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_agent_tools_work_over_the_process_engine(module: SchedulerModule) -> None:
    """The agent dispatcher's list_tasks sees what the facade scheduled in the other process."""
    dispatcher = AgentDispatcher(module.service, agent_id="tests")
    try:
        listed = dispatcher.call_sync("list_tasks", {"status": "paused"})
    finally:
        dispatcher.close()
    assert listed["ok"], listed
    assert [task["name"] for task in listed["result"]["tasks"]] == ["paused one"]
