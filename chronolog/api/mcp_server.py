"""The agent tools over the Model Context Protocol (MCP), served on stdio.

``build_mcp_server`` wraps an :class:`~chronolog.api.agent.AgentDispatcher` in the ``mcp``
package's low-level :class:`~mcp.server.lowlevel.Server`, which takes our tool listing
as is: the JSON Schemas come from :mod:`chronolog.api.agent_schemas`, not from Python
signatures. Tool errors are answered as results with ``isError`` (so the model sees the
error object and can correct itself), never as protocol errors.

Run it with ``python -m chronolog.api.mcp_server --data-dir DIR --functions MODULE``
(or ``chronolog mcp``). The process owns the data directory while it runs, starts a
:class:`~chronolog.module.SchedulerModule`, and serves until its stdin closes.

Functions to schedule come from the host, never from the agent: each ``--functions``
value (or each comma-separated entry of ``CHRONOLOG_MCP_FUNCTIONS``) names an importable
``module`` or ``module:callable``; the callable (default ``register_functions``) is called
with the :class:`~chronolog.service.SchedulerService` before the scheduler starts and
registers functions with ``service.register_function(name, fn)``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

import anyio
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

from chronolog import __version__
from chronolog.api.agent import AgentDispatcher
from chronolog.api.agent_schemas import TOOLS_BY_NAME
from chronolog.errors import ChronologError, ValidationError
from chronolog.functions import register_configured_functions
from chronolog.module import SchedulerModule
from chronolog.service import SchedulerService
from chronolog.settings import Settings, load_settings

#: Environment variable listing function modules when no ``--functions`` is given.
FUNCTIONS_ENV: Final = "CHRONOLOG_MCP_FUNCTIONS"
#: The callable looked up in a function module given without ``:callable``.
DEFAULT_REGISTER: Final = "register_functions"

INSTRUCTIONS: Final = (
    "chronolog schedules registered functions (once, every N units, or by cron, in an IANA "
    "time zone) and cleans registered directories. Every tool answers a JSON object: "
    '{"ok": true, "result": ...} or {"ok": false, "error": {"code", "message", "details"}}. '
    "An error changed nothing; read its message, fix the arguments and try again."
)


def mcp_tool(definition: dict[str, Any]) -> Tool:
    """One neutral tool definition as an MCP ``Tool``, with behaviour hints."""
    spec = TOOLS_BY_NAME[definition["name"]]
    return Tool(
        name=definition["name"],
        description=definition["description"],
        input_schema=definition["parameters"],
        annotations=ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            open_world_hint=False,
        ),
    )


def tool_result(answer: dict[str, Any]) -> CallToolResult:
    """A dispatcher answer as an MCP result: JSON text plus the same structured content."""
    text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=answer,
        is_error=not answer.get("ok", False),
    )


def build_mcp_server(dispatcher: AgentDispatcher, *, name: str = "chronolog") -> Server[Any]:
    """An MCP server offering the seven agent tools of ``dispatcher``.

    The listing is built on every ``tools/list``, so functions registered later appear in
    ``schedule_task``'s description.
    """

    async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=[mcp_tool(d) for d in dispatcher.tool_definitions()])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        return tool_result(await dispatcher.call(params.name, params.arguments))

    return Server(
        name,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def load_functions(spec: str, service: SchedulerService) -> None:
    """Import ``module[:callable]`` and call the callable with ``service``.

    Raises :class:`~chronolog.errors.ValidationError` when the module cannot be imported
    or has no such callable.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or DEFAULT_REGISTER
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"cannot import function module {module_name!r}: {exc}") from exc
    register = getattr(module, attribute, None)
    if not callable(register):
        raise ValidationError(
            f"function module {module_name!r} has no callable {attribute!r}; define "
            f"{attribute}(service) that calls service.register_function(name, fn)"
        )
    register(service)


def _functions_from_env() -> list[str]:
    return [part.strip() for part in os.environ.get(FUNCTIONS_ENV, "").split(",") if part.strip()]


async def run_stdio(
    settings: Settings, *, functions: Sequence[str] = (), agent_id: str = "mcp"
) -> None:
    """Start a scheduler on ``settings`` and serve the agent tools on stdio until EOF."""
    module = SchedulerModule(settings)
    register_configured_functions(module.service, settings)
    for spec in functions:
        load_functions(spec, module.service)
    dispatcher = AgentDispatcher(module.service, agent_id=agent_id)
    await module.start()
    try:
        server = build_mcp_server(dispatcher)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        dispatcher.close()
        await module.stop()


def main_mcp(
    settings: Settings, *, functions: Sequence[str] | None = None, agent_id: str = "mcp"
) -> int:
    """Serve MCP on stdio (``chronolog mcp``); returns the process exit status.

    ``functions`` defaults to the entries of ``CHRONOLOG_MCP_FUNCTIONS``.
    """
    chosen = _functions_from_env() if functions is None else list(functions)
    try:
        anyio.run(functools.partial(run_stdio, settings, functions=chosen, agent_id=agent_id))
    except ChronologError as exc:
        print(f"chronolog mcp: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m chronolog.api.mcp_server``."""
    parser = argparse.ArgumentParser(
        prog="python -m chronolog.api.mcp_server",
        description="Serve chronolog's agent tools over MCP on stdio.",
    )
    parser.add_argument("--config", help="settings TOML file")
    parser.add_argument("--data-dir", help="data directory (event log and projections)")
    parser.add_argument(
        "--cleanup-root",
        action="append",
        default=None,
        help="a directory inside which cleanups may delete (repeatable)",
    )
    parser.add_argument("--timezone", help="default IANA zone for tasks")
    parser.add_argument(
        "--functions",
        action="append",
        default=None,
        metavar="MODULE[:CALLABLE]",
        help=f"register functions by calling CALLABLE(service) (default {DEFAULT_REGISTER}); "
        f"repeatable; default: ${FUNCTIONS_ENV}",
    )
    parser.add_argument("--agent-id", default="mcp", help="recorded as the cause of changes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m chronolog.api.mcp_server``."""
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.cleanup_root is not None:
        overrides["cleanup_allowed_roots"] = list(args.cleanup_root)
    if args.timezone is not None:
        overrides["default_timezone"] = args.timezone
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ChronologError as exc:
        print(f"chronolog mcp: {exc.message}", file=sys.stderr)
        return 2
    return main_mcp(settings, functions=args.functions, agent_id=args.agent_id)


__all__ = [
    "FUNCTIONS_ENV",
    "build_mcp_server",
    "load_functions",
    "main_mcp",
    "mcp_tool",
    "run_stdio",
    "tool_result",
]

if __name__ == "__main__":
    sys.exit(main())
