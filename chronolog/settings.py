"""Settings: one msgspec Struct, loadable from TOML, ``CHRONOLOG_*`` variables and overrides.

Precedence, lowest first: defaults, the TOML file, environment variables, explicit
overrides (command-line flags). Every value is validated; an error names the key, where it
came from, and what is wrong.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from chronolog.errors import ValidationError
from chronolog.limits import MAX_POLICY_COUNT, MAX_SECONDS, is_utf8

LogFormat = Literal["auto", "json", "console", "logging"]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
#: Policy defaults end up in every task's policies: the same bounds as a task's own.
PolicySeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
PolicyTimeout = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
PolicyCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_POLICY_COUNT)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
#: An amount of memory as DuckDB reads it: a number and a unit, e.g. ``512MB``, ``1.5GiB``.
MemorySize = Annotated[
    str, msgspec.Meta(pattern=r"^[1-9][0-9]*(\.[0-9]+)? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
]

ENV_PREFIX = "CHRONOLOG_"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a chronolog instance runs. Every field has a working default."""

    #: Where the event log, the DuckDB projections and snapshots live.
    data_dir: str = "./chronolog-data"
    #: Where the scheduler runs. ``thread``: in the host's process, on threads of its own.
    #: ``process``: in a child process, with the facade and the host's functions in the
    #: host; the host's event loop then shares neither its GIL nor its garbage collector
    #: with the scheduler (its calls wait less), and each call crosses a socket.
    engine: Literal["thread", "process"] = "thread"
    #: Threads that run synchronous task functions.
    executor_threads: PositiveInt = 8
    #: Seconds a stop waits for running executions to end. Those still running then are
    #: asked to stop (a coroutine is cancelled, a thread sees ``context.cancelled``) and
    #: given a second more; a run that has not ended is recorded ``interrupted`` at the
    #: next start and retried per policy.
    stop_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    #: Retries after a failed execution, for tasks that do not say.
    default_max_retries: PolicyCount = 0
    #: First retry delay in seconds (doubles per attempt).
    default_retry_backoff: PolicySeconds = 1.0
    #: Execution timeout in seconds for tasks that do not say (None: no timeout).
    default_timeout: PolicyTimeout | None = None
    #: Most job actors alive at once (each holds its task's state in memory); the least
    #: recently used idle ones are passivated to stay under it.
    max_live_actors: PositiveInt = 20_000
    #: Threads that host the job actors; each appends its actors' decisions in batches.
    #: None leaves it to the engine: two in the host's process (as fast in bursts as
    #: eight, and fewer threads for the host's event loop to wait behind for the GIL),
    #: one in the scheduler process of ``engine = "process"`` (there two only queue their
    #: commits behind each other's).
    job_shards: PositiveInt | None = None
    #: Seconds a job actor may idle before it is passivated.
    actor_idle_seconds: PositiveFloat = 30.0
    #: Seconds before a fire's instant that the scheduler commits it (appends its
    #: ``ExecutionStarted``); the function is still released at the instant itself, so
    #: the durable write is off the critical path. Fires due within a tenth of the lead
    #: after the one the timer woke for are committed with it. 0 commits at the instant.
    fire_lead_seconds: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    #: Seconds a fire may be late and still count as on time (None: always on time).
    default_misfire_grace: PolicySeconds | None = 60.0
    #: IANA zone for tasks that do not name one (None: the machine's zone, else UTC).
    default_timezone: str | None = None
    #: ``json`` lines, ``console`` for people, ``auto`` picks by whether stderr is a tty;
    #: ``logging``: records of the standard ``logging`` module (loggers ``chronolog.*``),
    #: for the host's handlers.
    log_format: LogFormat = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: The most memory DuckDB may use for the projections, e.g. ``512MB`` (None: DuckDB's
    #: own limit, 80 % of the machine's memory or of the container's limit, which a host
    #: that needs its memory for itself may find too generous).
    projections_memory_limit: MemorySize | None = None
    #: SQLite durability of the event log.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    #: Bytes held back in the data directory for when its disk fills up: released then,
    #: so the log (and the cleanups that could free the disk) goes on; 0 holds none.
    disk_reserve_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)] = 1 << 20
    #: The HTTP API (``chronolog run`` / ``serve``).
    http_host: str = "127.0.0.1"
    http_port: Port = 8765
    http_token: str | None = None
    #: Directories inside which the Housekeeper may delete.
    cleanup_allowed_roots: tuple[str, ...] = ()
    #: Allow a registered cleanup directory to be a mount point.
    cleanup_allow_mount_roots: bool = False
    #: Budgets of one cleanup run (None: unlimited); a stopped run resumes next time.
    cleanup_max_files_per_run: PositiveInt | None = None
    cleanup_max_seconds_per_run: PositiveFloat | None = None
    #: Files listed per run in its report and its event (all are always counted).
    cleanup_max_records: PositiveInt = 1000
    #: Largest stored result of an execution, in bytes (bigger ones are truncated).
    max_result_bytes: PositiveInt = 65536
    #: Functions ``chronolog run`` registers: task function name -> ``"module:callable"``.
    functions: dict[str, str] = {}

    @property
    def data_path(self) -> Path:
        """``data_dir`` as a path."""
        return Path(self.data_dir)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        return load_settings(overrides=changes, base=self, environ={})


_FIELDS = {f.name: f for f in msgspec.structs.fields(Settings)}


def _convert(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValidationError(
            f"{origin}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})",
            details={"key": unknown[0], "origin": origin},
        )
    return dict(values)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Read ``CHRONOLOG_<FIELD>`` variables; values are parsed as TOML scalars or arrays."""
    found: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            continue  # other CHRONOLOG_* variables (e.g. for tests) are not settings
        found[key] = _parse_env_value(name, raw)
    return found


def _parse_env_value(name: str, raw: str) -> Any:
    if raw.lower() in ("", "none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in raw and not raw.startswith("["):
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw  # a bare string such as a path or a zone name


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Settings | None = None,
) -> Settings:
    """Build settings from defaults (or ``base``), a TOML file, the environment and overrides.

    The TOML file may keep its keys at the top level or under a ``[chronolog]`` table.
    """
    merged: dict[str, Any] = msgspec.structs.asdict(base) if base is not None else {}
    origins: dict[str, str] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ValidationError(f"settings file {os.fspath(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(
                f"settings file {os.fspath(path)!r} is not valid TOML: {exc}"
            ) from exc
        table = document.get("chronolog", document)
        layers.append(
            (
                f"settings file {os.fspath(path)}",
                _convert(table, f"settings file {os.fspath(path)}"),
            )
        )
    layers.append(("environment", _from_env(os.environ if environ is None else environ)))
    if overrides:
        layers.append(("overrides", _convert(overrides, "overrides")))
    for origin, layer in layers:
        for key, value in layer.items():
            merged[key] = value
            origins[key] = origin
    return _converted(merged, origins)


def check_settings(settings: Settings) -> Settings:
    """``settings`` itself when every field is within its bounds, else a
    :class:`ValidationError` naming the field. (A Struct's constructor checks nothing, so
    ``Settings(executor_threads=0)`` builds; the module checks what it is given.)"""
    _converted(msgspec.structs.asdict(settings), {})
    return settings


def _converted(values: dict[str, Any], origins: Mapping[str, str]) -> Settings:
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        bad_key = _key_of(text)
        raise _invalid(bad_key, text, origins) from exc
    problem = _meaning_problem(settings)
    if problem is not None:
        raise _invalid(*problem, origins)
    return settings


def _invalid(key: str | None, text: str, origins: Mapping[str, str]) -> ValidationError:
    where = origins.get(key or "", "the Settings given")
    return ValidationError(
        f"invalid setting {key or '?'} (from {where}): {text}",
        details={"key": key, "origin": where},
    )


def _meaning_problem(settings: Settings) -> tuple[str, str] | None:
    """(key, what is wrong) for a value of the right type that cannot work, else None.
    Found here rather than at the first task or cleanup that would use it."""
    if not settings.data_dir:
        return "data_dir", "give a directory (an empty string names none)"
    if not is_utf8(settings.data_dir):
        return "data_dir", (
            f"{settings.data_dir!r} is not valid Unicode (undecodable bytes in the path): "
            "DuckDB cannot open files there; use a directory whose name is UTF-8"
        )
    if "?" in settings.data_dir:
        return "data_dir", (
            f"{settings.data_dir!r} holds a '?': DuckDB reads what follows it in a database "
            "path as options, and could not keep its projections there"
        )
    zone = settings.default_timezone
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return (
                "default_timezone",
                f"{zone!r} is not an IANA time zone known here (e.g. 'Europe/Berlin', 'UTC')",
            )
    for root in settings.cleanup_allowed_roots:
        if not root.startswith("/"):
            return "cleanup_allowed_roots", f"{root!r} is not an absolute path"
    if settings.http_token == "":
        return "http_token", "an empty token would let anyone in; leave it unset for none"
    return None


def _key_of(message: str) -> str | None:
    # msgspec names the offending path as "at `$.key`" or "at `$.key[0]`".
    marker = "`$."
    if marker not in message:
        return None
    rest = message.split(marker, 1)[1]
    return rest.split("`", 1)[0].split("[", 1)[0]
