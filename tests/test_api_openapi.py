"""The OpenAPI document: valid, generated from the response types, and true of the live server.

Schemathesis loads the document from a live uvicorn server (with a bearer token, so the
auth checks run too) and fuzzes every operation with valid and invalid requests, running
its default checks: no 5xx, documented status codes and content types, responses that
match their schemas, valid data accepted, invalid data rejected, auth enforced.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import schemathesis.engine
from schemathesis import Case, GenerationMode
from schemathesis.engine import Status, StopReason, events

from chronolog import SchedulerModule, Settings
from chronolog.api.http import BadParameter, encode_cursor, parse_value
from chronolog.api.openapi import LIST_PARAMETERS, build_openapi
from chronolog.api.server import HttpServer
from chronolog.projections.queries import MAX_LIMIT, TASK_STATUSES
from chronolog.testing import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPENAPI = "/api/v1/scheduler/openapi.json"
PARAMS = {p.name: p for p in LIST_PARAMETERS}
EXAMPLES = 40
ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _ok() -> str:
    return "ok"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A live, token-protected server over a module with a few tasks."""
    clock = FakeClock(T0)
    data = tmp_path_factory.mktemp("openapi") / "data"
    settings = Settings(
        data_dir=str(data),
        default_timezone="UTC",
        http_port=0,
        http_token=TOKEN,
        log_level="error",
    )
    module = SchedulerModule(settings, clock=clock)
    module.start_blocking()
    svc = module.service.sync
    module.service.register_function("reports.build", _ok, module_id="billing")
    for i in range(8):
        svc.schedule_event(
            name=f"task {i}",
            function_name="reports.build",
            module_id=("billing", "mail")[i % 2],
            event_id=f"t{i}",
            next_execution=T0 + timedelta(minutes=1 if i < 3 else 60),
            recurring=i >= 5,
            interval_type="hours" if i >= 5 else None,
            interval_value=1 if i >= 5 else None,
        ).unwrap()
    svc.pause_event("t6").unwrap()
    clock.advance(90)
    assert module.settle(10)
    try:
        with HttpServer(module.service, settings) as srv:
            yield srv
    finally:
        module.stop_blocking()


def _realistic_cursor(case: Case) -> Case:
    """Give a schema-valid generated cursor the meaning a client's cursor has.

    A cursor is opaque: the document can say only "base64url text", but the server accepts
    just the ``next_cursor`` it issued for the same filters, and not together with
    ``offset``. So where the rest of the query is valid, a generated cursor is replaced by
    one the server would have issued and ``offset`` is dropped. Invalid queries are left
    as generated, so negative cases stay negative.
    """
    query = case.query
    cursor = query.get("cursor") if isinstance(query, dict) else None
    if not isinstance(query, dict) or not isinstance(cursor, str):
        return case
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,2048}", cursor):
        return case
    filters: dict[str, str | bool] = {}
    try:
        for name, value in query.items():
            param = PARAMS.get(name)
            if param is None:
                return case
            raw = str(value).lower() if isinstance(value, bool) else str(value)
            parsed = parse_value(name, param.schema, raw)
            if param.filter and isinstance(parsed, str | bool):
                filters[name] = parsed
    except BadParameter:
        return case
    query.pop("offset", None)
    query["cursor"] = encode_cursor(len(cursor) % 10, filters)
    return case


EVENTS_PATH = "/api/v1/scheduler/events"


def _query_is_valid(case: Case) -> bool:
    """Whether the server's own parameter rules accept the query as it goes on the wire."""
    query = case.query if isinstance(case.query, dict) else {}
    try:
        for name, value in query.items():
            param = PARAMS.get(name)
            if param is None or isinstance(value, list | dict):
                return False
            raw = str(value).lower() if isinstance(value, bool) else str(value)
            parse_value(name, param.schema, raw)
    except BadParameter:
        return False
    return "cursor" not in query or "offset" not in query


@pytest.fixture(scope="module")
def live_schema(server: HttpServer) -> Any:
    """The document as schemathesis loads it from the live server."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": EXAMPLES, "mode": "all"},
            "headers": AUTH,
        }
    )
    schema = schemathesis.openapi.from_url(server.url + OPENAPI, headers=AUTH, config=config)
    schema.hook("map_case")(lambda _ctx, case: _realistic_cursor(case))
    return schema


class TestDocument:
    """The document itself."""

    def test_is_valid_openapi(self, live_schema: Any) -> None:
        """Schemathesis validates it against the OpenAPI 3.1 meta-schema."""
        live_schema.validate()
        assert live_schema.raw_schema["openapi"] == "3.1.0"

    def test_lists_every_operation(self, server: HttpServer) -> None:
        """Each route is an operation schemathesis can generate requests for."""
        served = httpx.get(server.url + OPENAPI, headers=AUTH).json()
        schema = schemathesis.openapi.from_dict(served)
        labels = {result.ok().label for result in schema.get_all_operations()}
        assert labels == {
            "GET /api/v1/scheduler/events",
            "GET /api/v1/scheduler/events/{event_id}",
            "GET /api/v1/scheduler/openapi.json",
        }

    def test_schemas_come_from_the_response_types(self) -> None:
        """Components are msgspec's schemas of the response and error Structs."""
        schemas = build_openapi()["components"]["schemas"]
        assert {"EventPage", "ScheduledEvent", "EventTrigger", "ErrorEnvelope", "ErrorBody"} <= set(
            schemas
        )
        event = schemas["ScheduledEvent"]["properties"]
        assert event["next_fire"]["anyOf"][0] == {"type": "string", "format": "date-time"}
        page = schemas["EventPage"]
        assert page["properties"]["events"]["items"] == {
            "$ref": "#/components/schemas/ScheduledEvent"
        }
        assert set(page["required"]) == {"events", "total", "limit", "offset", "next_cursor"}

    def test_parameters_carry_enums_and_bounds(self) -> None:
        """status is an enum, limit and offset are bounded integers, recurring a boolean."""
        operation = build_openapi()["paths"]["/api/v1/scheduler/events"]["get"]
        params = {p["name"]: p["schema"] for p in operation["parameters"]}
        assert set(params["status"]["enum"]) == TASK_STATUSES
        assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, MAX_LIMIT)
        assert params["limit"]["default"] == 100
        assert params["offset"]["minimum"] == 0
        assert params["recurring"] == {"type": "boolean"}
        assert set(params) == {
            "status",
            "module_id",
            "function_name",
            "recurring",
            "limit",
            "offset",
            "cursor",
        }

    @pytest.mark.parametrize("secured", [False, True])
    def test_errors_reference_the_envelope(self, secured: bool) -> None:
        """Every non-200 response is the ErrorEnvelope; 401 appears only with a token."""
        document = build_openapi(secured=secured)
        for methods in document["paths"].values():
            responses = methods["get"]["responses"]
            assert ("401" in responses) is secured
            for status, response in responses.items():
                if status != "200":
                    assert response["content"]["application/json"]["schema"] == ERROR_REF
        assert ("securitySchemes" in document["components"]) is secured

    def test_served_document_matches_the_builder(self, server: HttpServer) -> None:
        """The server serves what build_openapi builds."""
        served = httpx.get(server.url + OPENAPI, headers=AUTH).json()
        assert served == build_openapi(secured=True)


class TestLiveServer:
    """Schemathesis against the running server finds nothing."""

    @pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    @pytest.mark.parametrize(
        "path", ["/api/v1/scheduler/events", "/api/v1/scheduler/events/{event_id}"]
    )
    def test_generated_requests_pass_every_check(
        self, live_schema: Any, path: str, mode: GenerationMode
    ) -> None:
        """Valid and invalid requests from the document pass schemathesis' default checks."""
        operation = live_schema[path]["GET"]
        calls: list[int] = []

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            # The same examples every run: a fuzz test that can fail on one run in many
            # would make CI a lottery. The full run below still explores freely.
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Case) -> None:
            case = _realistic_cursor(case)
            if mode is GenerationMode.NEGATIVE and path == EVENTS_PATH:
                # A value schemathesis meant as invalid can be valid once it is a query
                # string (the integer 5 as function_name is the text "5"): the server is
                # right to answer 200 then, so such a case is not a negative one.
                hypothesis.assume(not _query_is_valid(case))
            response = case.call_and_validate(headers=AUTH)
            calls.append(response.status_code)

        check()
        assert len(calls) >= 10
        if mode is GenerationMode.NEGATIVE:
            assert all(400 <= status < 500 for status in calls)
        elif path.endswith("{event_id}"):
            assert set(calls) <= {200, 404}  # random ids rarely exist
        else:
            assert set(calls) == {200}

    def test_full_run_finds_nothing(self, live_schema: Any) -> None:
        """The engine behind ``st run`` (coverage, fuzzing, stateful phases) reports no failure."""
        failures: list[str] = []
        errors: list[str] = []
        scenarios = 0
        stop_reason = None
        for event in schemathesis.engine.from_schema(live_schema).execute():
            if isinstance(event, events.ScenarioFinished):
                scenarios += 1
                for checks in event.recorder.checks.values():
                    failures += [
                        f"{event.label}: {node.name}: {node.failure_info.failure.title}"
                        for node in checks
                        if node.status == Status.FAILURE and node.failure_info is not None
                    ]
            elif isinstance(event, events.NonFatalError | events.FatalError):
                errors.append(repr(event))
            elif isinstance(event, events.EngineFinished):
                stop_reason = event.stop_reason
        assert not failures, "\n".join(sorted(set(failures)))
        assert not errors, errors
        assert stop_reason is StopReason.COMPLETED
        assert scenarios >= 4
