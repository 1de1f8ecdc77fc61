"""Structured logging with structlog: JSON lines, readable lines, or the host's logging.

chronolog never reconfigures a host that configured structlog itself; otherwise
:func:`configure_logging` sets the output and level from the settings. With
``log_format="logging"`` every event becomes a standard :mod:`logging` record on a logger
named after chronolog's part (``chronolog.runtime``, ``chronolog.store``, …), its fields
as record attributes, so the host's handlers, formatters and levels apply.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: Attributes every ``logging.LogRecord`` has: ``extra`` may not set them (logging raises
#: ``KeyError``), so event fields of these names are renamed with a trailing underscore.
#: The keywords logging takes itself (``exc_info`` …) are passed as such instead.
_RECORD_ATTRIBUTES = (
    frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
) - set(structlog.stdlib.LOG_KWARG_NAMES)


def _clear_of_record_attributes(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in [key for key in event_dict if key in _RECORD_ATTRIBUTES]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


def configure_logging(
    log_format: Literal["auto", "json", "console", "logging"] = "auto",
    level: str = "info",
    *,
    force: bool = False,
) -> None:
    """Configure structlog unless the host already did (``force`` overrides that)."""
    if structlog.is_configured() and not force:
        return
    wrapper = structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO))
    if log_format == "logging":
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                _clear_of_record_attributes,
                structlog.stdlib.render_to_log_kwargs,
            ],
            wrapper_class=wrapper,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=True,
        )
        return
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=wrapper,
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
