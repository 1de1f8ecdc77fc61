"""The agent tools: listings, the dispatcher, and "a failed call changes nothing"."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import jsonschema  # type: ignore[import-untyped]
import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chronolog import Cause, SchedulerModule, Settings
from chronolog.actors import housekeeper as housekeeper_actor
from chronolog.api.agent import (
    MAX_ARGUMENT_BYTES,
    AgentDispatcher,
    decode_arguments,
    idempotent_task_id,
)
from chronolog.api.agent_schemas import (
    TOOL_NAMES,
    TOOLS,
    TOOLS_BY_NAME,
    TaskSort,
    TaskStatus,
    anthropic_tools,
    openai_tools,
    parameters_schema,
    tool_definitions,
)
from chronolog.errors import ValidationError
from chronolog.projections import queries
from chronolog.testing import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CALLS: list[dict[str, Any]] = []


def send_report(to: str = "ops") -> str:
    CALLS.append({"to": to})
    return f"report sent to {to}"


def internal_helper() -> None:
    """Registered under a chronolog.* name: agents must not see or use it."""


class Host:
    """A started SchedulerModule on a fake clock, with a dispatcher for agent "bot"."""

    def __init__(self, root: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.clean = root / "clean"
        self.clean.mkdir()
        self.module = SchedulerModule(
            Settings(
                data_dir=str(root / "data"),
                cleanup_allowed_roots=(str(self.clean),),
                default_timezone="UTC",
            ),
            clock=clock,
        )
        self.svc = self.module.service
        self.svc.register_function("send_report", send_report, module_id="reports")
        self.svc.register_function("chronolog.internal_helper", internal_helper)
        self.module.start_blocking()
        self.agent = AgentDispatcher(self.svc, agent_id="bot")
        self.existing = ""

    def position(self) -> int:
        return self.module.require_runtime().store.last_position()

    def call(self, name: object, arguments: object = None) -> dict[str, Any]:
        """Call a tool, let the scheduler settle, and check the answer is JSON."""
        answer = self.agent.call_sync(name, arguments)
        assert self.module.settle(10)
        json.dumps(answer)
        return answer

    def ok(self, name: str, arguments: object = None) -> Any:
        answer = self.call(name, arguments)
        assert answer["ok"] is True, answer
        return answer["result"]

    def refused(self, name: object, arguments: object, code: str) -> dict[str, Any]:
        """The call answers an error with ``code`` and appends nothing to the log."""
        assert self.module.settle(10)
        before = self.position()
        answer = self.call(name, arguments)
        assert answer["ok"] is False, answer
        assert set(answer) == {"ok", "error"}
        assert set(answer["error"]) == {"code", "message", "details"}
        assert answer["error"]["code"] == code, answer
        assert self.position() == before
        error: dict[str, Any] = answer["error"]
        return error

    def schedule(self, **arguments: Any) -> dict[str, Any]:
        arguments.setdefault("name", "Report")
        arguments.setdefault("function_name", "send_report")
        task: dict[str, Any] = self.ok("schedule_task", arguments)["task"]
        return task

    def close(self) -> None:
        self.agent.close()
        self.module.stop_blocking()


@pytest.fixture
def host(tmp_path: Path, clock: FakeClock) -> Iterator[Host]:
    h = Host(tmp_path, clock)
    yield h
    h.close()


def _shared_host(factory: pytest.TempPathFactory, name: str) -> Host:
    return Host(factory.mktemp(name), FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC)))


@pytest.fixture(scope="module")
def quiet_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """One host for the refusal tables: a refused call changes nothing, so they can share
    it (a scheduler's stop takes half a second). It holds one cron task, ``existing``."""
    h = _shared_host(tmp_path_factory, "agent-refusals")
    h.existing = h.schedule(name="Existing", cron_expression="0 9 * * *")["id"]
    yield h
    h.close()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


VALID_ARGUMENTS: dict[str, dict[str, Any]] = {
    "schedule_task": {
        "name": "Nightly report",
        "function_name": "send_report",
        "cron_expression": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "parameters": {"to": "team"},
        "idempotency_key": "nightly",
    },
    "list_tasks": {"status": "scheduled", "limit": 5, "sort": "next_fire"},
    "cancel_task": {"task_id": "abc", "note": "not needed"},
    "pause_resume_task": {"task_id": "abc", "action": "pause"},
    "execute_task_now": {"task_id": "abc"},
    "register_cleanup": {"directory": "/var/log/app", "pattern": "*.log", "retention_days": 7},
    "run_cleanup": {"registration_id": "abc", "dry_run": False},
}


class TestToolListings:
    """The tool definitions are self-contained JSON Schemas in three shapes."""

    def test_the_seven_tools(self) -> None:
        """Exactly the seven tools are listed, in a stable order."""
        assert TOOL_NAMES == (
            "schedule_task",
            "list_tasks",
            "cancel_task",
            "pause_resume_task",
            "execute_task_now",
            "register_cleanup",
            "run_cleanup",
        )
        assert [d["name"] for d in tool_definitions()] == list(TOOL_NAMES)

    @pytest.mark.parametrize("name", TOOL_NAMES)
    def test_parameters_are_valid_self_contained_schemas(self, name: str) -> None:
        """Each parameters schema is a valid draft 2020-12 object schema without $ref."""
        schema = parameters_schema(TOOLS_BY_NAME[name].arguments)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert _refs(schema) == [] and "$defs" not in schema
        assert set(schema.get("required", ())) <= set(schema["properties"])
        for field, prop in schema["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"

    @pytest.mark.parametrize("name", TOOL_NAMES)
    def test_schema_and_dispatcher_agree_on_examples(self, name: str) -> None:
        """A valid example passes schema and Struct; an unknown field fails both."""
        validator = jsonschema.Draft202012Validator(
            parameters_schema(TOOLS_BY_NAME[name].arguments)
        )
        good = VALID_ARGUMENTS[name]
        validator.validate(good)
        decode_arguments(TOOLS_BY_NAME[name], good)
        bad = {**good, "unexpected": 1}
        assert not validator.is_valid(bad)
        with pytest.raises(ValidationError):
            decode_arguments(TOOLS_BY_NAME[name], bad)

    def test_enums_and_bounds_come_from_meta(self) -> None:
        """Enumerations and limits reach the schema, matching the projection's values."""
        props = parameters_schema(TOOLS_BY_NAME["list_tasks"].arguments)["properties"]
        status = next(b for b in props["status"]["anyOf"] if "enum" in b)
        assert set(status["enum"]) == set(queries.TASK_STATUSES)
        assert set(props["sort"]["enum"]) == set(queries.TASK_SORTS)
        assert props["limit"]["minimum"] == 1 and props["limit"]["maximum"] == 200
        assert set(get_args(TaskStatus)) == set(queries.TASK_STATUSES)
        assert set(get_args(TaskSort)) == set(queries.TASK_SORTS)
        action = parameters_schema(TOOLS_BY_NAME["pause_resume_task"].arguments)["properties"][
            "action"
        ]
        assert action["enum"] == ["pause", "resume"]

    def test_openai_and_anthropic_shapes(self) -> None:
        """The helpers wrap the same schemas in each API's envelope."""
        neutral = tool_definitions(["send_report"])
        for tool, wrapped in zip(neutral, openai_tools(neutral), strict=True):
            assert wrapped == {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool["description"],
                    "parameters": tool["parameters"],
                },
            }
        for tool, wrapped in zip(neutral, anthropic_tools(neutral), strict=True):
            assert wrapped == {
                "name": tool["name"],
                "description": tool["description"],
                "input_schema": tool["parameters"],
            }
            jsonschema.Draft202012Validator.check_schema(wrapped["input_schema"])

    def test_listing_names_registered_functions_but_not_internal_ones(self, host: Host) -> None:
        """schedule_task lists host functions (as an enum too); chronolog.* ones are hidden."""
        for listing in (host.agent.tool_definitions(), host.agent.anthropic_tools()):
            schedule = listing[0]
            schema = schedule.get("parameters") or schedule["input_schema"]
            assert "send_report" in schedule["description"]
            assert "chronolog." not in schedule["description"]
            assert schema["properties"]["function_name"]["enum"] == ["send_report"]
        host.svc.register_function("archive", send_report)
        assert "archive" in host.agent.openai_tools()[0]["function"]["description"]

    def test_listings_are_independent_copies(self) -> None:
        """Changing one listing cannot change the next."""
        first = tool_definitions(["a"])
        first[0]["parameters"]["properties"].clear()
        assert tool_definitions(["a"])[0]["parameters"]["properties"]


#: The required schedule_task arguments, for tables of bad requests.
R = {"name": "x", "function_name": "send_report"}


class TestScheduleTask:
    """schedule_task creates tasks through the facade, once per idempotency key."""

    def test_a_cron_task_is_scheduled_as_caused_by_the_agent(self, host: Host) -> None:
        """The task exists in the facade and its events name the agent as the cause."""
        result = host.ok(
            "schedule_task",
            {
                "name": "Morning report",
                "function_name": "send_report",
                "cron_expression": "0 9 * * *",
                "timezone": "Europe/Berlin",
                "parameters": {"to": "team"},
            },
        )
        task = result["task"]
        assert result["created"] is True
        assert task["status"] == "scheduled" and task["next_fire"] == "2026-03-02T08:00:00Z"
        assert result["next_fires"][0]["local"] == "2026-03-02T09:00:00+01:00"
        row = host.svc.sync.get_event(task["id"]).unwrap()
        assert (row.function_name, row.parameters, row.timezone) == (
            "send_report",
            {"to": "team"},
            "Europe/Berlin",
        )
        store = host.module.require_runtime().store
        envelopes = store.read_stream(f"task-{task['id']}")
        assert envelopes[0].metadata.caused_by == Cause(kind="agent", id="bot")

    def test_one_shot_and_interval_tasks(self, host: Host) -> None:
        """A naive next_execution is read in the task's zone; intervals repeat."""
        once = host.schedule(next_execution="2026-03-05T10:00:00", timezone="America/New_York")
        assert once["recurring"] is False and once["next_fire"] == "2026-03-05T15:00:00Z"
        every = host.schedule(
            next_execution="2026-03-02T00:00:00Z", interval_type="hours", interval_value=6
        )
        assert every["recurring"] is True
        assert every["trigger"] == {
            "kind": "interval",
            "every": 6,
            "unit": "hours",
            "start": "2026-03-02T00:00:00Z",
        }

    def test_the_same_idempotency_key_creates_one_task(self, host: Host) -> None:
        """A retried call returns the first task; nothing more is appended."""
        arguments = {
            "name": "Report",
            "function_name": "send_report",
            "interval_type": "days",
            "interval_value": 1,
            "idempotency_key": "daily-report-1",
        }
        first = host.ok("schedule_task", arguments)
        assert first["created"] is True
        assert first["task"]["id"] == idempotent_task_id("bot", "daily-report-1")
        before = host.position()
        host.clock.advance(90)  # a retry a little later: "now" differs, the task must not
        again = host.ok("schedule_task", arguments)
        assert again["created"] is False and again["task"]["id"] == first["task"]["id"]
        assert host.position() == before
        assert host.svc.sync.list_events().unwrap().total == 1

    def test_a_reused_key_for_another_task_is_a_conflict(self, host: Host) -> None:
        """The same key with a different name or function is refused, changing nothing."""
        host.schedule(name="First", idempotency_key="k")
        host.refused(
            "schedule_task",
            {"name": "Second", "function_name": "send_report", "idempotency_key": "k"},
            "conflict",
        )

    def test_keys_are_per_agent(self, host: Host) -> None:
        """Another agent's identical key names another task."""
        other = AgentDispatcher(host.svc, agent_id="other-bot")
        try:
            mine = host.schedule(idempotency_key="k")
            theirs = other.call_sync(
                "schedule_task",
                {"name": "Report", "function_name": "send_report", "idempotency_key": "k"},
            )
        finally:
            other.close()
        assert theirs["ok"] and theirs["result"]["task"]["id"] != mine["id"]
        assert host.svc.sync.list_events().unwrap().total == 2

    def test_preview_only_appends_nothing_and_reports_dst(self, host: Host) -> None:
        """A preview lists fire times with DST notes and schedules nothing."""
        before = host.position()
        result = host.ok(
            "schedule_task",
            {
                "name": "Night job",
                "function_name": "send_report",
                "cron_expression": "30 2 * * *",
                "timezone": "Europe/Berlin",
                "preview_only": True,
                "preview_count": 3,
                "idempotency_key": "night",
            },
        )
        assert host.position() == before
        assert host.svc.sync.list_events().unwrap().total == 0
        assert result["preview_only"] is True and result["scheduled"] is False
        assert [f["local"] for f in result["next_fires"]] == [
            "2026-03-02T02:30:00+01:00",
            "2026-03-03T02:30:00+01:00",
            "2026-03-04T02:30:00+01:00",
        ]
        assert any("2026-03-29" in note for note in result["dst_notes"])

    def test_a_preview_is_validated_like_a_real_call(self, host: Host) -> None:
        """preview_only with a bad spec answers the same error and appends nothing."""
        host.refused(
            "schedule_task",
            {
                "name": "x",
                "function_name": "send_report",
                "cron_expression": "61 * * * *",
                "preview_only": True,
            },
            "invalid_trigger",
        )
        host.refused(
            "schedule_task",
            {"name": "x", "function_name": "nope", "preview_only": True},
            "unknown_function",
        )

    @pytest.mark.parametrize(
        ("arguments", "code"),
        [
            ({"name": "x"}, "invalid_argument"),
            ({**R, "max_runs": "3"}, "invalid_argument"),
            ({**R, "max_runs": 0}, "invalid_argument"),
            ({**R, "max_runs": True}, "invalid_argument"),
            ({"name": "", "function_name": "send_report"}, "invalid_argument"),
            ({**R, "cron": "* * * * *"}, "invalid_argument"),
            ({**R, "interval_type": "fortnights", "interval_value": 1}, "invalid_argument"),
            ({**R, "interval_value": 3}, "invalid_argument"),
            ({**R, "interval_type": "days"}, "invalid_argument"),
            ({**R, "next_execution": "tomorrow"}, "invalid_argument"),
            ({**R, "parameters": [1, 2]}, "invalid_argument"),
            ({**R, "parameters": {"x": float("nan")}}, "invalid_argument"),
            ({**R, "cron_expression": "not cron"}, "invalid_trigger"),
            (
                {**R, "cron_expression": "0 9 * * *", "interval_type": "days", "interval_value": 1},
                "invalid_argument",
            ),
            ({**R, "timezone": "Mars/Olympus"}, "invalid_trigger"),
            # Its first fire (1 January 2027) is after its end: it could never run.
            (
                {**R, "cron_expression": "0 9 1 1 *", "end_date": "2026-12-31T00:00:00Z"},
                "invalid_trigger",
            ),
            ({"name": "x", "function_name": "os.system"}, "unknown_function"),
            ({"name": "x", "function_name": "chronolog.internal_helper"}, "unknown_function"),
            ({"name": "x", "function_name": "chronolog.cleanup"}, "unknown_function"),
        ],
    )
    def test_bad_arguments_change_nothing(
        self, quiet_host: Host, arguments: dict[str, Any], code: str
    ) -> None:
        """Each malformed request answers a typed error and appends nothing."""
        error = quiet_host.refused("schedule_task", arguments, code)
        assert error["message"]

    def test_validation_errors_name_the_field(self, quiet_host: Host) -> None:
        """Type errors name the field; unknown fields also list the allowed ones."""
        wrong_type = quiet_host.refused("list_tasks", {"limit": "ten"}, "invalid_argument")
        assert wrong_type["details"] == {"tool": "list_tasks", "field": "limit"}
        unknown = quiet_host.refused("list_tasks", {"colour": "red"}, "invalid_argument")
        assert unknown["details"]["field"] == "colour"
        assert "status" in unknown["details"]["allowed_fields"]


class TestListTasks:
    """list_tasks pages and filters the projection."""

    def test_filters_and_pages(self, host: Host) -> None:
        """Status filters, limits and totals work as documented."""
        ids = [host.schedule(name=f"t{i}", cron_expression="0 * * * *")["id"] for i in range(3)]
        host.ok("pause_resume_task", {"task_id": ids[0], "action": "pause"})
        page = host.ok("list_tasks", {"limit": 2})
        assert page["total"] == 3 and len(page["tasks"]) == 2 and page["has_more"] is True
        paused = host.ok("list_tasks", {"status": "paused"})
        assert [t["id"] for t in paused["tasks"]] == [ids[0]]
        named = host.ok("list_tasks", {"sort": "name", "descending": True})
        assert [t["name"] for t in named["tasks"]] == ["t2", "t1", "t0"]
        assert host.ok("list_tasks", None)["total"] == 3

    @pytest.mark.parametrize(
        "arguments",
        [
            {"limit": 0},
            {"limit": 201},
            {"offset": -1},
            {"status": "sleeping"},
            {"sort": "id; DROP"},
        ],
    )
    def test_bad_filters_are_refused(self, quiet_host: Host, arguments: dict[str, Any]) -> None:
        """Out-of-range or unknown filter values are errors."""
        quiet_host.refused("list_tasks", arguments, "invalid_argument")


class TestTaskCommands:
    """cancel_task, pause_resume_task and execute_task_now act on existing tasks only."""

    def test_pause_resume_cancel(self, host: Host) -> None:
        """Each command changes the status the facade reports."""
        task_id = host.schedule(cron_expression="0 9 * * *")["id"]
        paused = host.ok(
            "pause_resume_task", {"task_id": task_id, "action": "pause", "note": "holiday"}
        )["task"]
        assert paused["status"] == "paused" and paused["pause_note"] == "holiday"
        assert host.svc.sync.get_event(task_id).unwrap().status == "paused"
        resumed = host.ok("pause_resume_task", {"task_id": task_id, "action": "resume"})["task"]
        assert resumed["status"] == "scheduled"
        cancelled = host.ok("cancel_task", {"task_id": task_id, "note": "done"})["task"]
        assert cancelled["status"] == "cancelled"
        assert host.svc.sync.get_event(task_id).unwrap().status == "cancelled"
        host.refused("pause_resume_task", {"task_id": task_id, "action": "resume"}, "invalid_state")

    def test_execute_now_runs_the_function(self, host: Host) -> None:
        """execute_task_now returns an execution that runs the registered function."""
        CALLS.clear()
        task_id = host.schedule(cron_expression="0 9 * * *", parameters={"to": "cfo"})["id"]
        result = host.ok("execute_task_now", {"task_id": task_id})
        executions = host.svc.sync.get_executions(task_id).unwrap()
        assert [e.execution_id for e in executions.items] == [result["execution_id"]]
        assert executions.items[0].status == "succeeded"
        assert CALLS == [{"to": "cfo"}]

    @pytest.mark.parametrize(
        ("name", "arguments", "code"),
        [
            ("cancel_task", {"task_id": "no-such-task"}, "not_found"),
            ("pause_resume_task", {"task_id": "no-such-task", "action": "pause"}, "not_found"),
            ("execute_task_now", {"task_id": "no-such-task"}, "not_found"),
            ("cancel_task", {"task_id": "../etc/passwd"}, "invalid_argument"),
            ("cancel_task", {}, "invalid_argument"),
            ("cancel_task", {"task_id": 42}, "invalid_argument"),
            ("cancel_task", {"task_id": "EXISTING", "note": "x" * 2001}, "invalid_argument"),
            ("cancel_task", {"task_id": "EXISTING", "reason": "x"}, "invalid_argument"),
            ("pause_resume_task", {"task_id": "EXISTING", "action": "stop"}, "invalid_argument"),
            ("pause_resume_task", {"task_id": "EXISTING"}, "invalid_argument"),
            ("execute_task_now", {"task_id": "EXISTING", "when": "now"}, "invalid_argument"),
            ("execute_task_now", {"task_id": ["EXISTING"]}, "invalid_argument"),
        ],
    )
    def test_bad_commands_change_nothing(
        self, quiet_host: Host, name: str, arguments: dict[str, Any], code: str
    ) -> None:
        """Unknown ids and malformed arguments are refused without an append."""
        if arguments.get("task_id") == "EXISTING":
            arguments = {**arguments, "task_id": quiet_host.existing}
        quiet_host.refused(name, arguments, code)
        assert quiet_host.svc.sync.get_event(quiet_host.existing).unwrap().status == "scheduled"


def _file(directory: Path, name: str, mtime: datetime) -> Path:
    path = directory / name
    path.write_text("x" * 100)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


class TestCleanupTools:
    """register_cleanup and run_cleanup go through the Housekeeper's safety checks."""

    def test_register_dry_run_then_delete(self, host: Host) -> None:
        """A dry run reports the old file and keeps it; a real run removes only it."""
        old = _file(host.clean, "old.log", datetime(2026, 1, 1, tzinfo=UTC))
        new = _file(host.clean, "new.log", host.clock.now() - timedelta(hours=1))
        keep = _file(host.clean, "old.txt", datetime(2026, 1, 1, tzinfo=UTC))
        registered = host.ok(
            "register_cleanup",
            {"directory": str(host.clean), "pattern": "*.log", "retention_days": 30},
        )
        registration_id = registered["registration_id"]
        assert registered["task_id"] == f"cleanup-{registration_id}"
        assert registered["next_run"] == "2026-03-02T03:00:00Z"
        [row] = host.svc.sync.list_cleanups().unwrap()
        assert row.registration_id == registration_id and row.pattern == "*.log"
        dry = host.ok("run_cleanup", {"registration_id": registration_id})
        assert dry["dry_run"] is True
        [run] = dry["runs"]
        assert [(f["path"], f["outcome"]) for f in run["files"]] == [("old.log", "would_remove")]
        assert old.exists()
        real = host.ok("run_cleanup", {"registration_id": registration_id, "dry_run": False})
        assert real["runs"][0]["summary"]["files_removed"] == 1
        assert not old.exists() and new.exists() and keep.exists()

    @pytest.mark.parametrize(
        ("arguments", "code"),
        [
            ({"directory": "/", "retention_days": 1}, "unsafe_path"),
            ({"directory": "{tmp}", "retention_days": 1}, "unsafe_path"),
            ({"directory": "{clean}/..", "retention_days": 1}, "unsafe_path"),
            ({"directory": "{clean}", "pattern": "../*.log", "retention_days": 1}, "unsafe_path"),
            ({"directory": "{clean}", "pattern": "/etc/*", "retention_days": 1}, "unsafe_path"),
            ({"directory": "{clean}", "pattern": "*.log"}, "invalid_argument"),
            ({"directory": "{clean}", "retention_days": -1}, "invalid_argument"),
            ({"directory": "{clean}", "retention_days": "7"}, "invalid_argument"),
            (
                {"directory": "{clean}", "retention_days": 1, "exclude": "*.keep"},
                "invalid_argument",
            ),
            (
                {"directory": "{clean}", "retention_days": 1, "schedule": "whenever"},
                "invalid_trigger",
            ),
            ({"directory": "{clean}/missing", "retention_days": 1}, "invalid_argument"),
        ],
    )
    def test_unsafe_or_bad_registrations_change_nothing(
        self, quiet_host: Host, arguments: dict[str, Any], code: str
    ) -> None:
        """Directories outside the allowed roots, '..' and bad rules are refused."""
        resolved = {
            key: value.format(tmp=quiet_host.clean.parent, clean=quiet_host.clean)
            if isinstance(value, str)
            else value
            for key, value in arguments.items()
        }
        quiet_host.refused("register_cleanup", resolved, code)
        assert quiet_host.svc.sync.list_cleanups().unwrap() == []

    def test_run_cleanup_refusals(self, host: Host) -> None:
        """An unknown registration or a bad flag is refused; a file stays."""
        old = _file(host.clean, "old.log", datetime(2026, 1, 1, tzinfo=UTC))
        host.refused("run_cleanup", {"registration_id": "0123456789abcdef0123"}, "not_found")
        host.refused("run_cleanup", {"dry_run": "no"}, "invalid_argument")
        host.refused("run_cleanup", {"registration_id": "../x"}, "invalid_argument")
        assert host.ok("run_cleanup", {"dry_run": False}) == {"dry_run": False, "runs": []}
        assert old.exists()


class TestHousekeeperLifecycle:
    """The facade's side of the Housekeeper that the agent tools do not reach."""

    def test_unregister_cancels_the_task_and_keeps_the_history(self, host: Host) -> None:
        """Unregistering leaves the files alone, cancels the registration's task, keeps the
        registration (inactive) with its runs, and a second unregister is not_found."""
        svc = host.svc.sync
        old = _file(host.clean, "old.log", datetime(2026, 1, 1, tzinfo=UTC))
        registration_id = svc.register_cleanup(str(host.clean), "*.log", retention_days=30).unwrap()
        [outcome] = svc.run_cleanup(registration_id, dry_run=True).unwrap()
        assert outcome.error is None
        assert svc.unregister_cleanup(registration_id).unwrap() == registration_id
        assert host.module.settle(10)
        assert old.exists()
        assert svc.list_cleanups().unwrap() == []
        [row] = svc.list_cleanups(include_inactive=True).unwrap()
        assert (row.active, row.runs, row.unregistered_at is not None) == (False, 1, True)
        assert svc.get_event(f"cleanup-{registration_id}").unwrap().status == "cancelled"
        before = host.position()
        for missing in (registration_id, "0123456789abcdef0123"):
            assert svc.unregister_cleanup(missing).error.code == "not_found"
            assert svc.run_cleanup(missing).error.code == "not_found"
        assert svc.unregister_cleanup("../x").error.code == "invalid_argument"
        assert host.position() == before

    def test_a_run_that_fails_is_recorded_and_answered(self, host: Host) -> None:
        """A registered directory that is gone by the run: the run is recorded failed, its
        outcome says why, and nothing else is touched."""
        svc = host.svc.sync
        gone = host.clean / "gone"
        gone.mkdir()
        kept = _file(host.clean, "kept.log", datetime(2026, 1, 1, tzinfo=UTC))
        registration_id = svc.register_cleanup(str(gone), "*.log", retention_days=1).unwrap()
        gone.rmdir()
        [outcome] = svc.run_cleanup(registration_id, dry_run=False).unwrap()
        assert outcome.error_code == "invalid_argument", outcome
        assert outcome.error is not None and "does not exist" in outcome.error
        assert host.module.settle(10)
        [row] = svc.list_cleanups().unwrap()
        assert (row.runs, row.last_run_status) == (1, "failed")
        assert kept.exists()

    def test_the_schedulers_own_data_is_never_cleaned(self, tmp_path: Path) -> None:
        """With an allowed root that holds the data directory: registering the data
        directory is unsafe_path, and a recursive cleanup of the root with no age limit
        removes everything else but not one file of the log, its lock or the projections
        (a dry run used to list them all)."""
        data = tmp_path / "data"
        module = SchedulerModule(
            Settings(data_dir=str(data), cleanup_allowed_roots=(str(tmp_path),))
        )
        module.start_blocking()
        try:
            svc = module.service.sync
            refused = svc.register_cleanup(str(data), "*", retention_days=0)
            assert refused.error is not None and refused.error.code == "unsafe_path"
            old = _file(tmp_path, "old.log", datetime(2026, 1, 1, tzinfo=UTC))
            registration_id = svc.register_cleanup(
                str(tmp_path), "**", retention_days=0, recursive=True
            ).unwrap()
            own = {"events.sqlite3", "chronolog.lock", "projections.duckdb"}
            assert own <= {p.name for p in data.iterdir()}
            for dry_run in (True, False):
                [outcome] = svc.run_cleanup(registration_id, dry_run=dry_run).unwrap()
                assert outcome.report is not None, outcome
                assert [f.path for f in outcome.report.files] == ["old.log"]
            assert not old.exists()
            assert own <= {p.name for p in data.iterdir()}
        finally:
            module.stop_blocking()

    def test_a_registrations_task_is_changed_only_through_the_housekeeper(self, host: Host) -> None:
        """Updating or cancelling a registration's task, taking its id for another task,
        scheduling the built-in cleanup function directly or registering another function
        under its name would leave the registration active with a task that no longer runs
        it: each is refused with a pointer to the Housekeeper's own calls, and appends
        nothing. Pausing, resuming and running it now stay open."""
        svc = host.svc.sync
        registration_id = svc.register_cleanup(str(host.clean), "*.log", retention_days=30).unwrap()
        task_id = f"cleanup-{registration_id}"
        assert host.module.settle(10)
        before = host.position()
        refusals = [
            (svc.update_event(task_id, cron_expression="0 4 * * *"), "invalid_state"),
            (svc.update_event(task_id, parameters={"registration_id": "x"}), "invalid_state"),
            (svc.cancel_event(task_id), "invalid_state"),
            (svc.schedule_event("x", "send_report", event_id=task_id), "invalid_argument"),
            (svc.schedule_event("x", "send_report", event_id="cleanup-mine"), "invalid_argument"),
            (
                svc.schedule_event(
                    "x", "chronolog.cleanup", parameters={"registration_id": registration_id}
                ),
                "invalid_argument",
            ),
        ]
        for refused, code in refusals:
            assert refused.error is not None and refused.error.code == code, refused
        assert "unregister_cleanup" in refusals[2][0].error.message  # type: ignore[union-attr]
        assert host.position() == before
        for allowed in (svc.pause_event, svc.resume_event, svc.execute_now):
            assert allowed(task_id).ok
        assert host.module.settle(10)
        [row] = svc.list_cleanups().unwrap()
        assert row.active and svc.get_event(task_id).unwrap().status == "scheduled"
        # Nor can the function its task calls be replaced.
        with pytest.raises(ValidationError, match="chronolog's own"):
            host.svc.register_function("chronolog.cleanup", send_report)
        [outcome] = svc.run_cleanup(registration_id, dry_run=True).unwrap()
        assert outcome.report is not None

    def test_an_unexpected_error_is_answered_and_the_housekeeper_goes_on(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception no check foresaw, in a registration or in a run, comes back as an
        ``internal`` error; the Housekeeper keeps serving (it used to stop, and every
        later cleanup call failed), and a run that raised is recorded as failed."""
        svc = host.svc.sync
        real_id_for = housekeeper_actor.registration_id_for
        real_run = housekeeper_actor.run_cleanup
        failures = {"register": 1, "run": 1}

        def failing_once(name: str, real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if failures[name]:
                    failures[name] -= 1
                    raise RuntimeError(f"{name} broke")
                return real(*args, **kwargs)

            return call

        monkeypatch.setattr(
            housekeeper_actor, "registration_id_for", failing_once("register", real_id_for)
        )
        monkeypatch.setattr(housekeeper_actor, "run_cleanup", failing_once("run", real_run))
        old = _file(host.clean, "old.log", datetime(2026, 1, 1, tzinfo=UTC))
        refused = svc.register_cleanup(str(host.clean), "*.log", retention_days=30)
        assert refused.error is not None and refused.error.code == "internal", refused
        assert "register broke" in refused.error.message
        registration_id = svc.register_cleanup(str(host.clean), "*.log", retention_days=30).unwrap()
        [broken] = svc.run_cleanup(registration_id).unwrap()
        assert (broken.error_code, broken.error) == ("internal", "RuntimeError: run broke")
        assert old.exists()
        [outcome] = svc.run_cleanup(registration_id).unwrap()
        assert outcome.error is None and outcome.report is not None
        assert not old.exists()
        assert host.module.settle(10)
        [row] = svc.list_cleanups().unwrap()
        assert row.runs == 2 and row.last_run_status == "completed"
        runs = queries.list_cleanup_runs(host.module.require_projector().reader())
        assert sorted(run.status for run in runs.items) == ["completed", "failed"]


class TestAnyInput:
    """The dispatcher answers every input with an ``ok`` object and never raises."""

    @pytest.mark.parametrize(
        "arguments", [[], [1, 2], 3, 2.5, True, "not json", "[1]", b"\xff", object()]
    )
    def test_non_object_arguments(self, quiet_host: Host, arguments: object) -> None:
        """Anything but a JSON object (or its text) is invalid_argument."""
        quiet_host.refused("list_tasks", arguments, "invalid_argument")

    def test_json_text_arguments_are_accepted(self, host: Host) -> None:
        """OpenAI passes arguments as JSON text; that works like the object."""
        text = json.dumps(
            {"name": "R", "function_name": "send_report", "cron_expression": "@daily"}
        )
        assert host.ok("schedule_task", text)["created"] is True
        assert host.ok("list_tasks", None)["total"] == 1

    def test_huge_arguments_are_refused(self, quiet_host: Host) -> None:
        """Arguments over the size limit are refused before any work."""
        big = "x" * (MAX_ARGUMENT_BYTES + 1)
        quiet_host.refused(
            "schedule_task",
            {"name": "R", "function_name": "send_report", "parameters": {"b": big}},
            "invalid_argument",
        )
        quiet_host.refused("schedule_task", big, "invalid_argument")
        error = quiet_host.refused(
            "schedule_task", {"name": big, "function_name": "send_report"}, "invalid_argument"
        )
        assert len(error["message"]) < 1000

    @pytest.mark.parametrize("name", [None, 7, "", "drop_all", "x" * 100_000, ["list_tasks"]])
    def test_unknown_tool_names(self, quiet_host: Host, name: object) -> None:
        """Unknown or non-string tool names are not_found, listing the real tools."""
        error = quiet_host.refused(name, {}, "not_found")
        assert error["details"]["tools"] == list(TOOL_NAMES)
        assert len(error["message"]) < 1000

    def test_deeply_nested_arguments(self, quiet_host: Host) -> None:
        """Pathologically nested JSON is an error, not a crash."""
        nested: Any = "leaf"
        for _ in range(5000):
            nested = [nested]
        answer = quiet_host.call(
            "schedule_task",
            {"name": "R", "function_name": "send_report", "parameters": {"deep": nested}},
        )
        assert answer["ok"] is False

    def test_every_tool_has_a_handler(self, quiet_host: Host) -> None:
        """Each listed tool is dispatched (none answers "no tool")."""
        for tool in TOOLS:
            answer = quiet_host.call(tool.name, {"definitely_not_a_field": 1})
            assert answer["error"]["code"] == "invalid_argument"

    def test_async_call(self, host: Host) -> None:
        """call is a coroutine giving the same answers as call_sync."""
        import asyncio

        answer = asyncio.run(host.agent.call("list_tasks", {"limit": 1}))
        assert answer == {
            "ok": True,
            "result": {"tasks": [], "total": 0, "limit": 1, "offset": 0, "has_more": False},
        }


#: Arbitrary JSON values (the brief's "anything a model might send").
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

#: The task every fuzz host holds (scheduled with this idempotency key).
FUZZ_TASK = idempotent_task_id("bot", "fuzz")

#: Values that make a field plausible, so calls get past validation and reach the
#: facade, the Housekeeper, and success (``{clean}`` is the host's allowed root).
PLAUSIBLE: dict[str, list[Any]] = {
    "name": ["Report", "", " "],
    "function_name": ["send_report", "missing", "chronolog.cleanup"],
    "parameters": [{}, {"to": "cfo"}, {"to": 1.5}],
    "next_execution": ["2026-03-02T10:00:00", "2026-03-29T02:30:00", "2020-01-01T00:00:00Z"],
    "interval_type": ["minutes", "days", "months"],
    "interval_value": [1, 7],
    "cron_expression": ["0 9 * * *", "30 2 * * *", "@daily", "61 * * * *", "bad"],
    "timezone": ["UTC", "Europe/Berlin", "Mars/Olympus"],
    "end_date": ["2026-03-01T00:00:00Z", "2027-01-01T00:00:00"],
    "max_runs": [1, 3],
    "idempotency_key": ["fuzz", "k1"],
    "preview_only": [True, False],
    "status": ["scheduled", "paused", "cancelled"],
    "task_id": [FUZZ_TASK, "no-such-task", "../x"],
    "action": ["pause", "resume", "stop"],
    "note": ["why", "x" * 2001],
    "directory": ["{clean}", "{clean}/..", "{clean}/missing", "/", "relative"],
    "pattern": ["*", "*.log", "../*", "/etc/*", "a/**"],
    "retention_days": [0, 1, 30],
    "max_files": [0, 5],
    "recursive": [True, False],
    "schedule": ["0 4 * * *", "whenever"],
    "registration_id": ["0123456789abcdef0123", "../x"],
    "dry_run": [True, False],
}


def _arguments(name: str) -> st.SearchStrategy[Any]:
    """Arbitrary JSON, or objects over the tool's fields: plausible values only (to reach
    the facade and success), or mixed with arbitrary values and an unknown field."""
    fields = TOOLS_BY_NAME[name].arguments.__struct_fields__
    plausible = {field: st.sampled_from(PLAUSIBLE[field]) for field in fields if field in PLAUSIBLE}
    required = {f.name for f in msgspec.structs.fields(TOOLS_BY_NAME[name].arguments) if f.required}
    clean = st.fixed_dictionaries(
        {f: v for f, v in plausible.items() if f in required},
        optional={f: v for f, v in plausible.items() if f not in required},
    )
    noisy = st.fixed_dictionaries(
        {}, optional={**{f: plausible.get(f, JSON) | JSON for f in fields}, "extra": JSON}
    )
    as_text = clean.map(lambda d: json.dumps(d, allow_nan=True))
    return st.one_of(JSON, noisy, clean, clean, as_text)


CALL = st.sampled_from(TOOL_NAMES).flatmap(lambda n: st.tuples(st.just(n), _arguments(n)))


def _placed(arguments: Any, clean: Path) -> Any:
    if isinstance(arguments, dict) and isinstance(arguments.get("directory"), str):
        # replace, not str.format: fuzzed directories may hold any braces ("{").
        return {**arguments, "directory": arguments["directory"].replace("{clean}", str(clean))}
    return arguments


@pytest.fixture(scope="class")
def shared_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    h = _shared_host(tmp_path_factory, "agent-fuzz")
    h.schedule(cron_expression="0 9 * * *", idempotency_key="fuzz")
    yield h
    h.close()


class TestArbitraryJson:
    """Property: any JSON arguments to any tool give an answer, and only ok answers append."""

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(call=CALL)
    def test_never_raises_and_fails_cleanly(self, shared_host: Host, call: tuple[str, Any]) -> None:
        """Never an exception; always {"ok": ...}; nothing appended unless ok."""
        name, arguments = call
        arguments = _placed(arguments, shared_host.clean)
        assert shared_host.module.settle(10)
        before = shared_host.position()
        answer = shared_host.call(name, arguments)
        event(f"{name}: {answer['error']['code'] if not answer['ok'] else 'ok'}")
        assert isinstance(answer["ok"], bool)
        if answer["ok"]:
            assert set(answer) == {"ok", "result"}
        else:
            assert set(answer) == {"ok", "error"}
            assert (
                isinstance(answer["error"]["code"], str) and answer["error"]["code"] != "internal"
            )
            assert shared_host.position() == before

    @settings(max_examples=200, deadline=None)
    @given(call=CALL)
    def test_what_the_struct_accepts_the_schema_accepts(self, call: tuple[str, Any]) -> None:
        """The listed schema never rejects arguments the dispatcher would accept."""
        name, arguments = call
        tool = TOOLS_BY_NAME[name]
        try:
            decode_arguments(tool, arguments)
        except ValidationError:
            return
        if isinstance(arguments, str):
            arguments = msgspec.json.decode(arguments)
        jsonschema.Draft202012Validator(parameters_schema(tool.arguments)).validate(
            arguments if arguments is not None else {}
        )
