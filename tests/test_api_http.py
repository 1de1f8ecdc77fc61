"""The HTTP API on a real uvicorn server over a real module (SQLite log, DuckDB projections).

One module per test module holds 30 tasks across every status, three modules, several
functions, recurring and one-shot; the fake clock keeps their times stable.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from chronolog import SchedulerModule, Settings, ValidationError
from chronolog.api import server as server_module
from chronolog.api.http import create_app, decode_cursor, encode_cursor
from chronolog.api.openapi import ScheduledEvent
from chronolog.api.server import HttpServer, is_loopback, serve
from chronolog.result import ErrorInfo, Result
from chronolog.testing import FakeClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENTS = "/api/v1/scheduler/events"
OPENAPI = "/api/v1/scheduler/openapi.json"
TOKEN = "s3cret-token"
MODULES = ("billing", "mail", "sync")
FUNCTIONS = ("reports.build", "mail.send", "sync.pull")
STATUSES = ("scheduled", "running", "paused", "completed", "cancelled", "failed")

GATE = threading.Event()


def _ok() -> str:
    return "done"


def _fail() -> None:
    raise OSError("disk full")


def _block() -> str:
    GATE.wait(60)
    return "released"


@dataclass(frozen=True)
class Spec:
    """One task of the dataset and the state it must end in."""

    id: str
    module_id: str | None
    function_name: str
    recurring: bool
    status: str


def _dataset() -> list[Spec]:
    specs: list[Spec] = []
    for i in range(12):  # interval tasks: 3 paused, 2 cancelled, the rest scheduled
        status = "paused" if i in (1, 5, 9) else "cancelled" if i in (2, 7) else "scheduled"
        specs.append(Spec(f"r{i:02}", MODULES[i % 3], FUNCTIONS[(i // 3) % 3], True, status))
    for i in range(4):  # cron tasks, one without a module, one paused
        module = None if i == 3 else MODULES[i % 3]
        status = "paused" if i == 2 else "scheduled"
        specs.append(Spec(f"c{i:02}", module, FUNCTIONS[i % 3], True, status))
    for i in range(9):  # one-shots that run now: seven succeed, two fail
        function = "jobs.fail" if i >= 7 else FUNCTIONS[(i + 1) % 3]
        status = "failed" if i >= 7 else "completed"
        specs.append(Spec(f"o{i:02}", MODULES[i % 3], function, False, status))
    for i in range(4):  # one-shots due tomorrow, one cancelled
        status = "cancelled" if i == 3 else "scheduled"
        specs.append(Spec(f"d{i:02}", MODULES[i % 3], FUNCTIONS[i % 3], False, status))
    specs.append(Spec("b00", "sync", "jobs.block", False, "running"))
    return specs


SPECS = _dataset()
BY_ID = {spec.id: spec for spec in SPECS}


def expected(**filters: Any) -> list[str]:
    """Ids matching ``filters``, in the API's order (created_at, then id; b00 came last)."""
    found = [s.id for s in SPECS if all(getattr(s, k) == v for k, v in filters.items())]
    return sorted(found, key=lambda i: (i == "b00", i))


def _schedule(module: SchedulerModule, clock: FakeClock) -> None:
    svc = module.service.sync
    for spec in SPECS:
        if spec.id == "b00":
            continue
        kwargs: dict[str, Any] = {
            "name": f"task {spec.id}",
            "function_name": spec.function_name,
            "module_id": spec.module_id,
            "event_id": spec.id,
        }
        if spec.id.startswith("r"):
            kwargs.update(
                next_execution=T0 + timedelta(hours=2),
                recurring=True,
                interval_type="hours",
                interval_value=int(spec.id[1:]) % 3 + 1,
            )
        elif spec.id.startswith("c"):
            kwargs.update(cron_expression="0 3 * * *", timezone="Europe/Berlin")
        elif spec.id.startswith("o"):
            kwargs.update(next_execution=T0 + timedelta(minutes=1))
        else:
            kwargs.update(next_execution=T0 + timedelta(days=1))
        svc.schedule_event(**kwargs).unwrap()
        if spec.status == "paused":
            svc.pause_event(spec.id, "maintenance").unwrap()
        elif spec.status == "cancelled":
            svc.cancel_event(spec.id).unwrap()
    clock.advance(120)
    assert module.settle(10)
    svc.schedule_event(
        name="task b00",
        function_name="jobs.block",
        module_id="sync",
        event_id="b00",
        next_execution=clock.now() + timedelta(seconds=1),
    ).unwrap()
    clock.advance(1)
    runtime = module.require_runtime()
    assert runtime.settle(10, executions=False)
    assert module.require_projector().wait_for_position(runtime.store.last_position(), 10)


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerModule]:
    """A started module holding the dataset, with b00 held running until teardown."""
    clock = FakeClock(T0)
    data = tmp_path_factory.mktemp("http") / "data"
    settings = Settings(data_dir=str(data), default_timezone="UTC", http_port=0, log_level="error")
    mod = SchedulerModule(settings, clock=clock)
    mod.start_blocking()
    svc = mod.service
    for name in FUNCTIONS:
        svc.register_function(name, _ok, module_id="tests")
    svc.register_function("jobs.fail", _fail)
    svc.register_function("jobs.block", _block)
    GATE.clear()
    try:
        _schedule(mod, clock)
        yield mod
    finally:
        GATE.set()
        mod.stop_blocking()


@pytest.fixture(scope="module")
def server(module: SchedulerModule) -> Iterator[HttpServer]:
    """The open (loopback, no token) server on a free port."""
    with HttpServer(module.service, module.settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: HttpServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def secured(module: SchedulerModule) -> Iterator[HttpServer]:
    """A second server over the same facade that requires the bearer token."""
    with HttpServer(module.service, module.settings.replace(http_token=TOKEN)) as srv:
        yield srv


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [event["id"] for event in response.json()["events"]]


def assert_error(
    response: httpx.Response, status: int, code: str, parameter: str | None = None
) -> dict[str, Any]:
    """The response is the one error shape with this status, code (and parameter)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if parameter is not None:
        assert error["details"]["parameter"] == parameter
        assert parameter in error["message"]
    return error  # type: ignore[no-any-return]


class TestFilters:
    """GET /events with each filter and combinations of them."""

    def test_dataset_reached_every_status(self, client: httpx.Client) -> None:
        """Every task is in the status the scenario drove it to."""
        events = client.get(EVENTS, params={"limit": 1000}).json()["events"]
        assert {e["id"]: e["status"] for e in events} == {s.id: s.status for s in SPECS}

    def test_no_filter_lists_everything_in_order(self, client: httpx.Client) -> None:
        """Without filters every task is listed, oldest first, then by id."""
        response = client.get(EVENTS)
        body = response.json()
        assert ids(response) == expected()
        assert (body["total"], body["limit"], body["offset"], body["next_cursor"]) == (
            30,
            100,
            0,
            None,
        )

    @pytest.mark.parametrize("status", STATUSES)
    def test_status(self, client: httpx.Client, status: str) -> None:
        """status keeps only tasks in that status."""
        response = client.get(EVENTS, params={"status": status})
        assert ids(response) == expected(status=status)
        assert response.json()["total"] == len(expected(status=status)) > 0

    @pytest.mark.parametrize("module_id", MODULES)
    def test_module(self, client: httpx.Client, module_id: str) -> None:
        """module_id keeps only that module's tasks."""
        assert ids(client.get(EVENTS, params={"module_id": module_id})) == expected(
            module_id=module_id
        )

    @pytest.mark.parametrize("function_name", [*FUNCTIONS, "jobs.fail", "jobs.block"])
    def test_function(self, client: httpx.Client, function_name: str) -> None:
        """function_name keeps only tasks calling that function."""
        assert ids(client.get(EVENTS, params={"function_name": function_name})) == expected(
            function_name=function_name
        )

    @pytest.mark.parametrize("flag", [True, False])
    def test_recurring(self, client: httpx.Client, flag: bool) -> None:
        """recurring=true/false splits recurring tasks from one-shots."""
        response = client.get(EVENTS, params={"recurring": str(flag).lower()})
        assert ids(response) == expected(recurring=flag)

    @pytest.mark.parametrize(
        "filters",
        [
            {"status": "scheduled", "module_id": "billing"},
            {"status": "paused", "recurring": True},
            {"module_id": "mail", "function_name": "mail.send"},
            {"status": "scheduled", "module_id": "sync", "recurring": False},
            {"status": "completed", "module_id": "mail", "function_name": "sync.pull"},
            {"status": "failed", "module_id": "sync", "function_name": "jobs.fail"},
            {"status": "cancelled", "recurring": False, "module_id": "billing"},
        ],
    )
    def test_combinations(self, client: httpx.Client, filters: dict[str, Any]) -> None:
        """Filters combine with AND."""
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in filters.items()}
        want = expected(**filters)
        assert want, "each combination should match something"
        assert ids(client.get(EVENTS, params=params)) == want

    def test_no_match_is_an_empty_page(self, client: httpx.Client) -> None:
        """A filter that matches nothing answers 200 with no events."""
        body = client.get(EVENTS, params={"module_id": "nobody"}).json()
        assert body == {"events": [], "total": 0, "limit": 100, "offset": 0, "next_cursor": None}

    def test_event_fields(self, client: httpx.Client) -> None:
        """An event carries its trigger, times, outcome and counters."""
        events = {e["id"]: e for e in client.get(EVENTS, params={"limit": 1000}).json()["events"]}
        r = events["r01"]
        assert r["trigger"]["kind"] == "interval"
        assert (r["trigger"]["spec"]["every"], r["trigger"]["spec"]["unit"]) == (2, "hours")
        assert r["module_id"] == "mail" and r["function_name"] == "reports.build"
        assert r["status"] == "paused" and r["pause_note"] == "maintenance"
        assert r["timezone"] == "UTC" and r["recurring"] is True
        assert r["created_at"] == "2026-03-01T12:00:00Z"
        cron = events["c00"]
        assert cron["trigger"]["kind"] == "cron"
        assert cron["trigger"]["spec"]["expression"] == "0 3 * * *"
        assert cron["timezone"] == "Europe/Berlin"
        assert cron["next_fire"] == "2026-03-02T02:00:00Z"
        done = events["o00"]
        assert (done["runs"], done["successes"], done["failures"]) == (1, 1, 0)
        assert done["last_outcome"] == "succeeded"
        assert done["last_fire"] == "2026-03-01T12:01:00Z"
        assert events["o07"]["failures"] == 1 and events["o07"]["last_outcome"] == "failed"
        assert "parameters" not in done and "policies" not in done

    def test_the_listing_shows_what_the_facade_lists(
        self, client: httpx.Client, module: SchedulerModule
    ) -> None:
        """The endpoint's events are the facade's full rows shaped for the API (it reads
        them as summaries, which skip parameters and policies)."""
        rows = module.service.sync.list_events(limit=1000).unwrap().items
        body = client.get(EVENTS, params={"limit": 1000}).json()
        shaped = [msgspec.to_builtins(ScheduledEvent.from_row(row)) for row in rows]
        assert body["events"] == shaped
        summaries = module.service.sync.list_event_summaries(limit=1000).unwrap().items
        assert [ScheduledEvent.from_row(s) for s in summaries] == [
            ScheduledEvent.from_row(row) for row in rows
        ]


class TestPagination:
    """limit/offset and opaque cursors walk a listing to its end."""

    def test_offset_walk(self, client: httpx.Client) -> None:
        """Pages of 7 by offset cover every task once, in order."""
        seen: list[str] = []
        offset = 0
        while True:
            body = client.get(EVENTS, params={"limit": 7, "offset": offset}).json()
            assert body["total"] == 30 and body["offset"] == offset
            seen += [e["id"] for e in body["events"]]
            offset += 7
            if offset >= 30:
                assert body["next_cursor"] is None
                break
            assert body["next_cursor"] is not None
        assert seen == expected()

    @pytest.mark.parametrize(
        "filters", [{}, {"status": "scheduled"}, {"module_id": "sync", "recurring": "true"}]
    )
    def test_cursor_walk(self, client: httpx.Client, filters: dict[str, str]) -> None:
        """Following next_cursor with the same filters visits each match once, in order."""
        seen: list[str] = []
        body = client.get(EVENTS, params={**filters, "limit": 4}).json()
        pages = 1
        while True:
            seen += [e["id"] for e in body["events"]]
            if body["next_cursor"] is None:
                break
            params = {**filters, "limit": 4, "cursor": body["next_cursor"]}
            body = client.get(EVENTS, params=params).json()
            pages += 1
        typed = {k: v == "true" if k == "recurring" else v for k, v in filters.items()}
        assert seen == expected(**typed)
        assert pages == -(-len(seen) // 4)

    def test_cursor_is_opaque_but_decodable(self) -> None:
        """A cursor round-trips its offset for the same filters only."""
        cursor = encode_cursor(40, {"status": "paused", "recurring": True})
        assert decode_cursor(cursor, {"recurring": True, "status": "paused"}) == 40
        assert "=" not in cursor and "+" not in cursor and "/" not in cursor

    def test_cursor_with_other_filters_is_rejected(self, client: httpx.Client) -> None:
        """A cursor used with different filters is a 400 naming cursor."""
        first = client.get(EVENTS, params={"status": "scheduled", "limit": 2}).json()
        for params in (
            {"status": "paused"},
            {},
            {"status": "scheduled", "module_id": "mail"},
        ):
            response = client.get(EVENTS, params={**params, "cursor": first["next_cursor"]})
            assert_error(response, 400, "invalid_argument", "cursor")

    @pytest.mark.parametrize("cursor", ["x", "AAAA", encode_cursor(1, {})[:-2] + "!!", "e30"])
    def test_malformed_cursor(self, client: httpx.Client, cursor: str) -> None:
        """A cursor this API did not issue is a 400 naming cursor."""
        assert_error(
            client.get(EVENTS, params={"cursor": cursor}), 400, "invalid_argument", "cursor"
        )

    def test_cursor_and_offset_together(self, client: httpx.Client) -> None:
        """cursor and offset are alternatives: both at once is a 400."""
        response = client.get(EVENTS, params={"cursor": encode_cursor(3, {}), "offset": 3})
        assert_error(response, 400, "invalid_argument", "offset")

    def test_limit_may_change_between_cursor_pages(self, client: httpx.Client) -> None:
        """The page size is free while following a cursor."""
        first = client.get(EVENTS, params={"limit": 5}).json()
        second = client.get(EVENTS, params={"limit": 10, "cursor": first["next_cursor"]})
        assert ids(second) == expected()[5:15]

    def test_past_the_end(self, client: httpx.Client) -> None:
        """An offset past the end gives an empty page that still knows the total."""
        body = client.get(EVENTS, params={"offset": 500}).json()
        assert (body["events"], body["total"], body["next_cursor"]) == ([], 30, None)

    @pytest.mark.parametrize("limit", [1, 1000])
    def test_limit_bounds_accepted(self, client: httpx.Client, limit: int) -> None:
        """limit 1 and 1000 are allowed."""
        body = client.get(EVENTS, params={"limit": limit}).json()
        assert body["limit"] == limit and len(body["events"]) == min(limit, 30)

    @pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", "", " 5", "1e3", "٣"])
    def test_limit_out_of_bounds(self, client: httpx.Client, limit: str) -> None:
        """Any other limit is a 400 naming limit."""
        assert_error(client.get(EVENTS, params={"limit": limit}), 400, "invalid_argument", "limit")

    @pytest.mark.parametrize("offset", ["-1", "x", "", "1000000001", "99999999999999999999999"])
    def test_bad_offset(self, client: httpx.Client, offset: str) -> None:
        """A negative, huge or non-integer offset is a 400 naming offset."""
        response = client.get(EVENTS, params={"offset": offset})
        assert_error(response, 400, "invalid_argument", "offset")


class TestBadParameters:
    """Malformed filters are 400s that name the parameter."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("status", "bogus"),
            ("status", "SCHEDULED"),
            ("status", ""),
            ("recurring", "yes"),
            ("recurring", "1"),
            ("module_id", "bad id"),
            ("module_id", "billing\n"),
            ("module_id", "x" * 129),
            ("function_name", ""),
            ("function_name", "f" * 201),
        ],
    )
    def test_bad_value(self, client: httpx.Client, name: str, value: str) -> None:
        """The message and details.parameter name the offending parameter."""
        assert_error(client.get(EVENTS, params={name: value}), 400, "invalid_argument", name)

    def test_status_message_lists_the_choices(self, client: httpx.Client) -> None:
        """A bad status says which ones exist."""
        error = assert_error(client.get(EVENTS, params={"status": "done"}), 400, "invalid_argument")
        assert all(status in error["message"] for status in STATUSES)

    def test_unknown_parameter(self, client: httpx.Client) -> None:
        """An unknown query parameter is a 400 naming it."""
        response = client.get(EVENTS, params={"sort": "name"})
        assert_error(response, 400, "invalid_argument", "sort")

    def test_repeated_parameter(self, client: httpx.Client) -> None:
        """A parameter given twice is a 400 naming it."""
        response = client.get(EVENTS + "?status=paused&status=scheduled")
        assert_error(response, 400, "invalid_argument", "status")

    def test_unknown_parameter_on_one_event(self, client: httpx.Client) -> None:
        """The single-event route takes no query parameters."""
        response = client.get(f"{EVENTS}/r00", params={"verbose": "1"})
        assert_error(response, 400, "invalid_argument", "verbose")


class TestOneEvent:
    """GET /events/{event_id}."""

    def test_known(self, client: httpx.Client) -> None:
        """One event has the same fields as in the listing."""
        listed = client.get(EVENTS, params={"module_id": "mail", "limit": 1}).json()["events"][0]
        response = client.get(f"{EVENTS}/{listed['id']}")
        assert response.status_code == 200
        assert response.json() == listed

    def test_unknown_is_404(self, client: httpx.Client) -> None:
        """An unknown id is a 404 in the error shape, naming the id."""
        error = assert_error(client.get(f"{EVENTS}/nope"), 404, "not_found")
        assert error["details"] == {"event_id": "nope"}

    @pytest.mark.parametrize("event_id", ["bad%20id", "-leading-dash", "x" * 129])
    def test_malformed_id_is_400(self, client: httpx.Client, event_id: str) -> None:
        """An id that cannot exist is a 400 naming event_id."""
        assert_error(client.get(f"{EVENTS}/{event_id}"), 400, "invalid_argument", "event_id")


class TestErrors:
    """Routing, method and server errors share the one shape."""

    @pytest.mark.parametrize("path", ["/", "/nope", f"{EVENTS}/", "/api/v1/scheduler/events/a/b"])
    def test_unknown_route(self, client: httpx.Client, path: str) -> None:
        """Unknown routes are 404s in the error shape (no redirects)."""
        assert_error(client.get(path), 404, "not_found")

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    def test_wrong_method(self, client: httpx.Client, method: str) -> None:
        """Other methods are 405s in the error shape with an Allow header."""
        response = client.request(method, EVENTS)
        assert_error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["allow"]

    def test_unexpected_exception_is_a_clean_500(
        self, client: httpx.Client, module: SchedulerModule, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception inside a handler becomes a 500 without a traceback or its text."""

        async def boom(**_: Any) -> Result[Any]:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(module.service, "list_event_summaries", boom)
        response = client.get(EVENTS)
        assert_error(response, 500, "internal")
        assert "secret" not in response.text

    @pytest.mark.parametrize(
        ("code", "status"), [("internal", 500), ("timeout", 504), ("storage_error", 500)]
    )
    def test_facade_errors_map_by_code(
        self,
        client: httpx.Client,
        module: SchedulerModule,
        monkeypatch: pytest.MonkeyPatch,
        code: str,
        status: int,
    ) -> None:
        """A failed Result becomes its code's status; 500s hide the lower layer's message."""

        async def failing(*_: Any, **__: Any) -> Result[Any]:
            return Result.failure(ErrorInfo(code=code, message="duckdb said no"))

        monkeypatch.setattr(module.service, "get_event", failing)
        response = client.get(f"{EVENTS}/r00")
        error = assert_error(response, status, code)
        assert ("duckdb" in error["message"]) == (status != 500)

    def test_not_started_is_503(self, tmp_path: Path) -> None:
        """A module that is not started answers 503 unavailable."""
        idle = SchedulerModule(Settings(data_dir=str(tmp_path / "idle")))
        app = create_app(idle.service)

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get(EVENTS)

        assert_error(asyncio.run(call()), 503, "unavailable")


class TestAuth:
    """With a token, every request needs it."""

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"X-Token": TOKEN},
        ],
    )
    @pytest.mark.parametrize("path", [EVENTS, f"{EVENTS}/r00", OPENAPI, "/nope"])
    def test_rejected(self, secured: HttpServer, headers: dict[str, str], path: str) -> None:
        """Missing, wrong or non-bearer credentials get 401 on every route."""
        response = httpx.get(secured.url + path, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_accepted(self, secured: HttpServer) -> None:
        """The right bearer token gets through (scheme case-insensitive)."""
        for scheme in ("Bearer", "bearer"):
            auth = {"Authorization": f"{scheme} {TOKEN}"}
            assert httpx.get(secured.url + EVENTS, headers=auth).json()["total"] == 30
        document = httpx.get(secured.url + OPENAPI, headers=auth).json()
        assert document["security"] == [{"bearerAuth": []}]

    def test_open_server_needs_no_token(self, client: httpx.Client) -> None:
        """Without a configured token, requests need no credentials."""
        assert client.get(EVENTS).status_code == 200
        assert "security" not in client.get(OPENAPI).json()


class TestServer:
    """Binding rules, free ports, and both ways to run uvicorn."""

    def test_the_server_thread_uses_uvloop_when_installed(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """uvloop's loop when importable, asyncio's default otherwise."""
        uvloop = pytest.importorskip("uvloop")
        assert server_module._loop_factory() is uvloop.new_event_loop
        monkeypatch.setitem(sys.modules, "uvloop", None)  # makes the import fail
        assert server_module._loop_factory() is None

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com", ""])
    def test_refuses_non_loopback_without_token(self, module: SchedulerModule, host: str) -> None:
        """A non-loopback host without a token is refused with a typed error."""
        settings = module.settings.replace(http_host=host)
        with pytest.raises(ValidationError, match="token"):
            HttpServer(module.service, settings)
        with pytest.raises(ValidationError, match="http_token"):
            serve(module, settings)

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.10.0.2", True),
            ("::1", True),
            ("[::1]", True),
            ("localhost", True),
            ("0.0.0.0", False),
            ("::", False),
            ("10.0.0.1", False),
            ("my-host", False),
        ],
    )
    def test_is_loopback(self, host: str, loopback: bool) -> None:
        """Only loopback addresses and localhost count as local."""
        assert is_loopback(host) is loopback

    def test_all_interfaces_with_token(self, module: SchedulerModule) -> None:
        """With a token the server binds 0.0.0.0 and demands the token."""
        settings = module.settings.replace(http_host="0.0.0.0", http_token=TOKEN)
        with serve(module, settings) as server:
            url = f"http://127.0.0.1:{server.port}{EVENTS}"
            assert httpx.get(url).status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(url, headers=auth).status_code == 200

    def test_port_zero_picks_a_free_port_and_stop_releases_it(
        self, module: SchedulerModule
    ) -> None:
        """Port 0 binds a free port, exposed as port and url; stop closes it."""
        server = serve(module.service, module.settings)
        port = server.port
        assert port > 0 and server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(server.url + EVENTS).status_code == 200
        server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}{EVENTS}")

    def test_port_in_use(self, module: SchedulerModule, server: HttpServer) -> None:
        """A port that is taken is a typed error at start, not a crashed thread."""
        taken = module.settings.replace(http_port=server.port)
        with pytest.raises(ValidationError, match="cannot bind"):
            HttpServer(module.service, taken).start()

    def test_ipv6_loopback(self, module: SchedulerModule) -> None:
        """::1 is loopback: served without a token, with a bracketed URL."""
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        try:
            server = serve(module, module.settings.replace(http_host="::1"))
        except ValidationError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        with server:
            assert server.url.startswith("http://[::1]:")
            assert httpx.get(server.url + EVENTS).status_code == 200

    def test_awaitable(self, module: SchedulerModule) -> None:
        """serve() runs on the caller's event loop until shutdown()."""

        async def main() -> int:
            server = HttpServer(module.service, module.settings)
            task = asyncio.create_task(server.serve())
            for _ in range(500):
                if server.running:
                    break
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=server.url) as c:
                total = (await c.get(EVENTS)).json()["total"]
            server.shutdown()
            await asyncio.wait_for(task, 10)
            return int(total)

        assert asyncio.run(main()) == 30

    def test_concurrent_requests_are_served_together(self, server: HttpServer) -> None:
        """Many requests at once all succeed (queries run off the event loop)."""

        async def main() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url) as c:
                calls = [c.get(EVENTS, params={"offset": i % 30, "limit": 5}) for i in range(60)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(main()) == [200] * 60


class TestMounting:
    """The app works mounted inside a host's Starlette app."""

    def test_mounted_under_a_prefix(self, module: SchedulerModule) -> None:
        """Routes, errors and the document's server URL follow the mount point."""

        async def health(request: Request) -> Response:
            return PlainTextResponse("ok")

        host = Starlette(
            routes=[
                Route("/health", health),
                Mount("/scheduler", app=create_app(module.service)),
            ]
        )

        async def main() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=host)
            async with httpx.AsyncClient(transport=transport, base_url="http://host") as c:
                return [
                    await c.get("/health"),
                    await c.get("/scheduler" + EVENTS, params={"status": "running"}),
                    await c.get("/scheduler" + EVENTS + "/nope"),
                    await c.get("/scheduler" + OPENAPI),
                    await c.get("/scheduler/elsewhere"),
                ]

        health_r, listing, missing, document, elsewhere = asyncio.run(main())
        assert health_r.text == "ok"
        assert ids(listing) == ["b00"]
        assert_error(missing, 404, "not_found")
        assert document.json()["servers"] == [{"url": "/scheduler"}]
        assert_error(elsewhere, 404, "not_found")
