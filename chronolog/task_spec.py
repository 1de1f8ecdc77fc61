"""Turns the facade's keyword arguments into a validated :class:`TaskDefinition`.

All input checking for scheduling lives here, before anything reaches a job actor, so a
bad request is answered with a typed error and nothing is appended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import msgspec

from chronolog.errors import InvalidTriggerError, ValidationError
from chronolog.events import CatchupPolicy, OverlapPolicy, TaskDefinition, TaskPolicies
from chronolog.functions import FunctionRegistry
from chronolog.housekeeping.model import AgeBasis, CleanupRules
from chronolog.limits import (
    MAX_GLOB_LENGTH,
    MAX_INT32,
    MAX_INT64,
    MAX_POLICY_COUNT,
    check_int,
    check_retention_days,
    check_seconds,
    check_text,
    instant_in_range,
    instant_range_message,
)
from chronolog.settings import Settings
from chronolog.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    TriggerSpec,
    machine_zone,
    next_fire,
    validate,
)
from chronolog.triggers.spec import AmbiguousPolicy, IntervalUnit, MonthEndPolicy, NonexistentPolicy
from chronolog.triggers.zones import UnknownZoneError, get_zone, unknown_zone_message

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class ScheduleRequest(msgspec.Struct, kw_only=True):
    """Everything ``schedule_event`` accepts, with ``None`` meaning "the default"."""

    name: str
    function_name: str
    next_execution: datetime | None = None
    recurring: bool = False
    interval_type: str | None = None
    interval_value: int | None = None
    cron_expression: str | None = None
    timezone: str | None = None
    end_date: datetime | None = None
    max_runs: int | None = None
    max_retries: int | None = None
    retry_backoff: float | None = None
    timeout: float | None = None
    overlap: str | None = None
    max_concurrent: int | None = None
    catchup: str | None = None
    catchup_limit: int | None = None
    misfire_grace: float | None = None
    jitter: float | None = None
    nonexistent: str | None = None
    ambiguous: str | None = None
    month_end: str | None = None
    module_id: str | None = None
    parameters: dict[str, Any] | None = None


def check_id(value: object, what: str = "event_id") -> str:
    """Accept ids made of letters, digits and ``._:@-`` (at most 128), else raise."""
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{what} must be 1-128 characters of letters, digits and ._:@- "
            f"starting with a letter or digit, got {value!r}",
            details={"field": what},
        )
    return value


def _choice(field: str, value: str | None, allowed: Any) -> Any:
    if value is None:
        return None
    options = get_args(allowed)
    if value not in options:
        raise ValidationError(
            f"{field} must be one of {', '.join(options)}, got {value!r}", details={"field": field}
        )
    return value


def resolve_zone(name: str | None, settings: Settings) -> str:
    """The zone a task uses: its own, else the settings' default, else the machine's."""
    zone = name or settings.default_timezone or machine_zone()
    try:
        if not isinstance(zone, str):
            raise UnknownZoneError(zone)
        get_zone(zone)
    except UnknownZoneError:
        raise InvalidTriggerError(
            unknown_zone_message(zone), details={"field": "timezone"}
        ) from None
    return zone


def _aware(value: datetime | None, zone: str, field: str) -> datetime | None:
    """Read a naive datetime as wall time in the task's zone."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(
            f"{field} must be a datetime, got {type(value).__name__}", details={"field": field}
        )
    if not instant_in_range(value):
        raise ValidationError(instant_range_message(field, value), details={"field": field})
    if value.tzinfo is None or value.utcoffset() is None:
        value = _localize(value, ZoneInfo(zone))
    return value


def _localize(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time in ``zone`` under the default DST rules: a time the clock skips
    (spring forward) becomes the first instant after the gap, a time that happens twice
    (fall back) its first occurrence."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists (fold=0 is the first copy when it is repeated)
    # In a gap: fold=1 reads it with the offset after the gap, which lands before the gap;
    # fold=0 with the offset before, which lands after it. The gap's end lies between.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    after_offset = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(zone)


#: Trigger fields under the names a facade caller gave them, for errors that speak the
#: caller's language (``interval_value``, not the trigger's ``every``).
_REQUEST_FIELDS = {
    "every": "interval_value",
    "unit": "interval_type",
    "expression": "cron_expression",
    "start": "next_execution",
    "run_at": "next_execution",
    "end": "end_date",
    "jitter_seconds": "jitter",
}


def _in_request_terms(error: InvalidTriggerError) -> InvalidTriggerError:
    """``error`` naming the request's parameter instead of the trigger's field, in
    ``details["field"]`` and where the message starts with the field's name."""
    field = error.details.get("field")
    if not isinstance(field, str) or field not in _REQUEST_FIELDS:
        return error
    name = _REQUEST_FIELDS[field]
    message = error.message
    if message.startswith(field) and message[len(field) : len(field) + 1] in (" ", "="):
        message = name + message[len(field) :]
    return InvalidTriggerError(message, details={**error.details, "field": name})


def build_trigger(request: ScheduleRequest, settings: Settings, now: datetime) -> TriggerSpec:
    """The trigger spec the request describes, validated; errors name the request's
    parameters."""
    try:
        return _build_trigger(request, settings, now)
    except InvalidTriggerError as exc:
        raise _in_request_terms(exc) from None


def _build_trigger(request: ScheduleRequest, settings: Settings, now: datetime) -> TriggerSpec:
    if not isinstance(request.recurring, bool):
        raise ValidationError(
            f"recurring must be true or false, got {request.recurring!r}",
            details={"field": "recurring"},
        )
    # Checked whatever the kind, although only month intervals use it: a bad value is a
    # mistake worth saying.
    month_end: MonthEndPolicy = _choice("month_end", request.month_end, MonthEndPolicy) or "clamp"
    zone = resolve_zone(request.timezone, settings)
    start = _aware(request.next_execution, zone, "next_execution")
    end = _aware(request.end_date, zone, "end_date")
    # The trigger checks this too, in its own terms (start, run_at); said here in the
    # caller's. A cron task without next_execution has no anchor to compare with.
    first = start if request.cron_expression is not None else (start or now)
    if end is not None and first is not None and end < first:
        anchor = "next_execution" if start is not None else "now"
        raise InvalidTriggerError(
            f"end_date {end.isoformat()} is before {anchor} {first.isoformat()}, so the task "
            "could never run: move end_date later, or leave it out to run without an end",
            details={"field": "end_date"},
        )
    common: dict[str, Any] = {
        "timezone": zone,
        "end": end,
        "max_runs": request.max_runs,
        "jitter_seconds": 0.0 if request.jitter is None else request.jitter,
    }
    for field, value, allowed in (
        ("nonexistent", request.nonexistent, NonexistentPolicy),
        ("ambiguous", request.ambiguous, AmbiguousPolicy),
    ):
        chosen = _choice(field, value, allowed)
        if chosen is not None:
            common[field] = chosen
    spec: TriggerSpec
    if request.cron_expression is not None:
        if request.interval_type is not None:
            raise ValidationError(
                "give either cron_expression or interval_type, not both",
                details={"field": "interval_type"},
            )
        spec = CronTrigger(expression=request.cron_expression, start=start, **common)
    elif request.recurring or request.interval_type is not None:
        if request.interval_type is None or request.interval_value is None:
            raise ValidationError(
                "a recurring task needs interval_type and interval_value (or a cron_expression)",
                details={"field": "interval_type"},
            )
        unit = _choice("interval_type", request.interval_type, IntervalUnit)
        spec = IntervalTrigger(
            every=request.interval_value,
            unit=unit,
            start=start or now,
            month_end=month_end,
            **common,
        )
    else:
        spec = DateTrigger(run_at=start or now, **common)
    spec = validate(spec)
    # A cron task without next_execution first fires at its expression's next instant after
    # now: the anchor check above had nothing to compare end_date with.
    if (
        isinstance(spec, CronTrigger)
        and start is None
        and end is not None
        and next_fire(spec, now) is None
    ):
        local_now = now.astimezone(get_zone(zone)).isoformat()
        raise InvalidTriggerError(
            f"cron_expression {request.cron_expression!r} has no fire between now "
            f"({local_now}) and end_date {end.isoformat()}, so the task could never run: "
            "move end_date later, or leave it out",
            details={"field": "end_date"},
        )
    return spec


def build_policies(request: ScheduleRequest, settings: Settings) -> TaskPolicies:
    """Execution policies: the request's values over the settings' defaults."""
    values: dict[str, Any] = {
        "max_retries": settings.default_max_retries
        if request.max_retries is None
        else request.max_retries,
        "retry_backoff_seconds": settings.default_retry_backoff
        if request.retry_backoff is None
        else request.retry_backoff,
        "timeout_seconds": settings.default_timeout if request.timeout is None else request.timeout,
        "misfire_grace_seconds": settings.default_misfire_grace
        if request.misfire_grace is None
        else request.misfire_grace,
    }
    overlap: OverlapPolicy | None = _choice("overlap", request.overlap, OverlapPolicy)
    catchup: CatchupPolicy | None = _choice("catchup", request.catchup, CatchupPolicy)
    if overlap is not None:
        values["overlap"] = overlap
    if catchup is not None:
        values["catchup"] = catchup
    if request.max_concurrent is not None:
        values["max_concurrent"] = request.max_concurrent
    if request.catchup_limit is not None:
        values["catchup_limit"] = request.catchup_limit
    for field, value, minimum in (
        ("max_retries", values["max_retries"], 0),
        ("max_concurrent", values.get("max_concurrent", 1), 1),
        ("catchup_limit", values.get("catchup_limit", 1), 1),
    ):
        check_int(value, field, minimum=minimum, maximum=MAX_POLICY_COUNT)
    for field, parameter in (
        ("retry_backoff_seconds", "retry_backoff"),
        ("timeout_seconds", "timeout"),
        ("misfire_grace_seconds", "misfire_grace"),
    ):
        if values[field] is not None:
            check_seconds(values[field], parameter)
    if values["timeout_seconds"] == 0:
        raise ValidationError(
            "timeout must be > 0 seconds (or None for no timeout)", details={"field": "timeout"}
        )
    return TaskPolicies(**values)


_PARAMS_ENCODER = msgspec.json.Encoder()


def check_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters must be a JSON object (they are stored in the log and passed as kwargs)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise ValidationError(
            "parameters must be a mapping with string keys", details={"field": "parameters"}
        )
    try:
        round_trip = msgspec.json.decode(_PARAMS_ENCODER.encode(dict(parameters)))
    # UnicodeEncodeError: a string with a lone surrogate, which UTF-8 cannot carry.
    except (TypeError, msgspec.EncodeError, OverflowError, UnicodeEncodeError) as exc:
        raise ValidationError(
            f"parameters must be JSON-encodable: {exc}", details={"field": "parameters"}
        ) from exc
    if round_trip != dict(parameters):
        raise ValidationError(
            "parameters must survive a JSON round trip unchanged (no tuples, sets or datetimes; "
            "pass ISO strings instead)",
            details={"field": "parameters"},
        )
    return dict(parameters)


def build_definition(
    request: ScheduleRequest, settings: Settings, registry: FunctionRegistry, now: datetime
) -> tuple[TaskDefinition, bool]:
    """The validated definition and whether the task is recurring."""
    check_text(request.name, "name", max_length=500)
    function = registry.get(request.function_name)
    if request.module_id is not None:
        check_id(request.module_id, "module_id")
    parameters = check_parameters(request.parameters)
    trigger = build_trigger(request, settings, now)
    function.check_call(parameters)
    definition = TaskDefinition(
        name=request.name,
        function_name=request.function_name,
        module_id=request.module_id,
        parameters=parameters,
        trigger=trigger,
        policies=build_policies(request, settings),
    )
    return definition, not isinstance(trigger, DateTrigger)


def build_cleanup_rules(
    *,
    pattern: str,
    retention_days: float | None,
    max_files: int | None,
    max_total_bytes: int | None,
    exclude: Sequence[str],
    recursive: bool,
    remove_empty_dirs: bool,
    age_basis: str,
) -> CleanupRules:
    """Housekeeper rules from ``register_cleanup`` arguments (paths are checked later,
    against the allowed roots, by the Housekeeper itself)."""
    check_text(pattern, "pattern", max_length=MAX_GLOB_LENGTH)
    if isinstance(exclude, str) or not isinstance(exclude, Sequence):
        raise ValidationError("exclude must be a list of globs", details={"field": "exclude"})
    for glob in exclude:
        check_text(glob, "exclude", max_length=MAX_GLOB_LENGTH)
    if retention_days is not None:
        check_retention_days(retention_days)
    if max_total_bytes is not None:
        check_int(max_total_bytes, "max_total_bytes", minimum=0, maximum=MAX_INT64)
    if max_files is not None:
        check_int(max_files, "max_files", minimum=0, maximum=MAX_INT32)
    if retention_days is None and max_files is None and max_total_bytes is None:
        raise ValidationError(
            "give at least one of retention_days, max_files or max_total_bytes "
            "(a registration with no limit would never remove anything)",
            details={"field": "retention_days"},
        )
    for field, flag in (("recursive", recursive), ("remove_empty_dirs", remove_empty_dirs)):
        if not isinstance(flag, bool):
            raise ValidationError(f"{field} must be true or false", details={"field": field})
    basis = _choice("age_basis", age_basis, AgeBasis)
    return CleanupRules(
        pattern=pattern,
        retention_days=None if retention_days is None else float(retention_days),
        max_files=max_files,
        max_total_bytes=max_total_bytes,
        exclude=tuple(exclude),
        recursive=recursive,
        remove_empty_dirs=remove_empty_dirs,
        age_basis=basis,
    )


#: The request fields that make a task an interval task.
_INTERVAL_FIELDS = ("interval_type", "interval_value")


def apply_changes(request: ScheduleRequest, changes: Mapping[str, Any]) -> ScheduleRequest:
    """A copy of ``request`` with ``changes`` (unknown names are an error)."""
    allowed = set(ScheduleRequest.__struct_fields__)
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r} for update_event", details={"field": unknown[0]}
        )
    updated = msgspec.structs.replace(request, **changes)
    # A change of trigger kind replaces the old kind's fields instead of adding to them:
    # a cron expression given to an interval task makes it a cron task, an interval given
    # to a cron task an interval task, and recurring=False alone a one-shot at
    # next_execution.
    gives_cron = changes.get("cron_expression") is not None
    gives_interval = any(changes.get(name) is not None for name in _INTERVAL_FIELDS)
    if gives_cron and not gives_interval:
        updated = msgspec.structs.replace(
            updated, recurring=True, interval_type=None, interval_value=None
        )
    elif gives_interval and not gives_cron:
        updated = msgspec.structs.replace(updated, recurring=True, cron_expression=None)
    elif changes.get("recurring") is False and not (gives_cron or gives_interval):
        updated = msgspec.structs.replace(
            updated, interval_type=None, interval_value=None, cron_expression=None
        )
    return updated


def request_from_definition(definition: TaskDefinition) -> ScheduleRequest:
    """The request that would produce ``definition`` (the base that updates modify)."""
    trigger = definition.trigger
    policies = definition.policies
    request = ScheduleRequest(
        name=definition.name,
        function_name=definition.function_name,
        module_id=definition.module_id,
        parameters=dict(definition.parameters),
        timezone=trigger.timezone,
        end_date=trigger.end,
        max_runs=trigger.max_runs,
        jitter=trigger.jitter_seconds,
        nonexistent=trigger.nonexistent,
        ambiguous=trigger.ambiguous,
        max_retries=policies.max_retries,
        retry_backoff=policies.retry_backoff_seconds,
        timeout=policies.timeout_seconds,
        overlap=policies.overlap,
        max_concurrent=policies.max_concurrent,
        catchup=policies.catchup,
        catchup_limit=policies.catchup_limit,
        misfire_grace=policies.misfire_grace_seconds,
    )
    if isinstance(trigger, DateTrigger):
        request.next_execution = trigger.run_at
    elif isinstance(trigger, IntervalTrigger):
        request.recurring = True
        request.interval_type = trigger.unit
        request.interval_value = trigger.every
        request.next_execution = trigger.start
        request.month_end = trigger.month_end
    else:
        request.recurring = True
        request.cron_expression = trigger.expression
        request.next_execution = trigger.start
    return request


__all__ = [
    "ScheduleRequest",
    "apply_changes",
    "build_definition",
    "check_id",
    "check_parameters",
    "request_from_definition",
    "resolve_zone",
]
