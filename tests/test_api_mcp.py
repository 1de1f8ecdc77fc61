"""The MCP server end to end: a real server process driven by the ``mcp`` package's client."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from chronolog.api.agent_schemas import TOOL_NAMES

pytestmark = pytest.mark.timeout(120)

FUNCTION_MODULE = textwrap.dedent(
    '''
    def send_report(to: str = "ops") -> str:
        """Pretend to send a report."""
        return f"report sent to {to}"


    def register_functions(service):
        service.register_function("send_report", send_report, module_id="mcp.demo")
    '''
)

Session = Callable[[ClientSession], Awaitable[None]]


def serve(tmp_path: Path, body: Session, *extra_args: str) -> None:
    """Start ``python -m chronolog.api.mcp_server`` over stdio and run ``body`` against it."""
    (tmp_path / "mcp_demo_functions.py").write_text(FUNCTION_MODULE)
    (tmp_path / "clean").mkdir(exist_ok=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "chronolog.api.mcp_server",
            "--data-dir",
            str(tmp_path / "data"),
            "--cleanup-root",
            str(tmp_path / "clean"),
            "--timezone",
            "UTC",
            *extra_args,
        ],
        env={"PYTHONPATH": str(tmp_path), "CHRONOLOG_LOG_LEVEL": "warning"},
        cwd=str(tmp_path),
    )

    async def main() -> None:
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await body(session)

    asyncio.run(main())


def answer_of(result: CallToolResult) -> dict[str, Any]:
    """The dispatcher's answer, read from the text content (and checked against the
    structured content)."""
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    answer: dict[str, Any] = json.loads(block.text)
    assert result.structured_content == answer
    assert result.is_error is (not answer["ok"])
    return answer


class TestMcpServer:
    """The server lists the seven tools and runs them on a real scheduler."""

    def test_tools_list_schedule_and_list(self, tmp_path: Path) -> None:
        """list_tools gives exactly the seven tools; a task scheduled by MCP is listed."""
        seen: dict[str, Any] = {}

        async def body(session: ClientSession) -> None:
            listing = await session.list_tools()
            seen["tools"] = {tool.name: tool for tool in listing.tools}
            scheduled = await session.call_tool(
                "schedule_task",
                {
                    "name": "Morning report",
                    "function_name": "send_report",
                    "cron_expression": "0 9 * * 1-5",
                    "timezone": "Europe/Berlin",
                    "parameters": {"to": "team"},
                    "idempotency_key": "morning-report",
                },
            )
            seen["scheduled"] = answer_of(scheduled)
            listed = await session.call_tool("list_tasks", {"function_name": "send_report"})
            seen["listed"] = answer_of(listed)

        serve(tmp_path, body, "--functions", "mcp_demo_functions")
        tools = seen["tools"]
        assert sorted(tools) == sorted(TOOL_NAMES)
        for tool in tools.values():
            assert tool.input_schema["type"] == "object"
            assert tool.input_schema["additionalProperties"] is False
        assert "send_report" in (tools["schedule_task"].description or "")
        assert tools["list_tasks"].annotations.read_only_hint is True
        assert tools["run_cleanup"].annotations.destructive_hint is True
        scheduled = seen["scheduled"]
        assert scheduled["ok"], scheduled
        task = scheduled["result"]["task"]
        assert task["status"] == "scheduled"
        assert task["trigger"] == {"kind": "cron", "expression": "0 9 * * 1-5"}
        listed = seen["listed"]
        assert listed["ok"], listed
        assert [t["id"] for t in listed["result"]["tasks"]] == [task["id"]]
        assert listed["result"]["tasks"][0]["parameters"] == {"to": "team"}

    def test_errors_are_tool_results(self, tmp_path: Path) -> None:
        """Bad arguments, unknown tools and unsafe cleanups come back as isError results."""
        seen: dict[str, dict[str, Any]] = {}

        async def body(session: ClientSession) -> None:
            await session.list_tools()
            calls: dict[str, tuple[str, dict[str, Any]]] = {
                "unknown_field": ("list_tasks", {"colour": "red"}),
                "unknown_tool": ("drop_database", {}),
                "unregistered": ("schedule_task", {"name": "x", "function_name": "os.system"}),
                "outside_roots": (
                    "register_cleanup",
                    {"directory": str(tmp_path), "retention_days": 1},
                ),
                "cleanup_ok": (
                    "register_cleanup",
                    {"directory": str(tmp_path / "clean"), "pattern": "*.log", "max_files": 5},
                ),
                "dry_run": ("run_cleanup", {}),
            }
            for label, (name, arguments) in calls.items():
                seen[label] = answer_of(await session.call_tool(name, arguments))

        serve(tmp_path, body)
        assert seen["unknown_field"]["error"]["code"] == "invalid_argument"
        assert seen["unknown_tool"]["error"]["code"] == "not_found"
        assert seen["unregistered"]["error"]["code"] == "unknown_function"
        assert seen["outside_roots"]["error"]["code"] == "unsafe_path"
        assert seen["cleanup_ok"]["ok"], seen["cleanup_ok"]
        dry_run = seen["dry_run"]
        assert dry_run["ok"] and dry_run["result"]["dry_run"] is True
        assert [r["registration_id"] for r in dry_run["result"]["runs"]] == [
            seen["cleanup_ok"]["result"]["registration_id"]
        ]


class TestCommandLine:
    """The module's command line fails clearly on bad input."""

    def test_a_missing_function_module_exits_with_a_message(self, tmp_path: Path) -> None:
        """An unimportable --functions module stops the server with status 1 and a reason."""
        from chronolog.api.mcp_server import main

        status = main(
            ["--data-dir", str(tmp_path / "data"), "--functions", "no_such_module_for_mcp"]
        )
        assert status == 1

    def test_a_module_without_the_callable_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A function module lacking register_functions is named in the error."""
        (tmp_path / "empty_functions_mod.py").write_text("X = 1\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        from chronolog.api.mcp_server import main

        status = main(["--data-dir", str(tmp_path / "data"), "--functions", "empty_functions_mod"])
        assert status == 1
        assert "register_functions" in capsys.readouterr().err
