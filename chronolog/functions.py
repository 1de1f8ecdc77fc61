"""The function registry: tasks name functions; only registered names can ever run."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from chronolog.errors import UnknownFunctionError, ValidationError
from chronolog.limits import is_utf8

if TYPE_CHECKING:
    from chronolog.settings import Settings


class CallRules(msgspec.Struct, frozen=True):
    """Which ``parameters`` a function can be called with, read from its signature once.

    ``required``: names without a default; ``allowed``: every name it takes by keyword, or
    None when it takes ``**kwargs`` (or has no signature to read). ``context`` is neither:
    the executor passes it.
    """

    required: frozenset[str] = frozenset()
    allowed: frozenset[str] | None = None

    @classmethod
    def of(cls, signature: inspect.Signature | None) -> CallRules:
        """The rules of a function's signature (anything goes when it has none)."""
        if signature is None:
            return cls()
        required: set[str] = set()
        allowed: set[str] | None = set()
        for parameter in signature.parameters.values():
            if parameter.name == "context":
                continue
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                allowed = None
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                if parameter.default is inspect.Parameter.empty:
                    required.add(parameter.name)
                if allowed is not None and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                    allowed.add(parameter.name)
        return cls(frozenset(required), None if allowed is None else frozenset(allowed))

    def problems(self, parameters: Mapping[str, Any]) -> str | None:
        """What keeps a call with ``parameters`` (as keywords) from binding, or None."""
        given = parameters.keys() - {"context"}
        missing = sorted(self.required - given)
        unknown = sorted(given - self.allowed) if self.allowed is not None else []
        if "context" in parameters:
            unknown.append("context (chronolog passes it)")
        if not missing and not unknown:
            return None
        said = []
        if missing:
            said.append(f"missing {', '.join(missing)}")
        if unknown:
            said.append(f"not taken: {', '.join(unknown)}")
        return "; ".join(said)


class RegisteredFunction(msgspec.Struct, frozen=True):
    """A function tasks may name, with the module that registered it."""

    name: str
    function: Callable[..., Any]
    module_id: str | None
    is_async: bool
    accepts_context: bool
    description: str = ""
    rules: CallRules = CallRules()

    def check_call(self, parameters: Mapping[str, Any]) -> None:
        """Raise ``ValidationError`` unless a run could call the function with these
        ``parameters``: a mistake is refused when it is scheduled, not found at every run."""
        problems = self.rules.problems(parameters)
        if problems is not None:
            takes = (
                "anything"
                if self.rules.allowed is None
                else ", ".join(sorted(self.rules.allowed)) or "no parameters"
            )
            raise ValidationError(
                f"parameters do not fit {self.name!r}: {problems} (it takes {takes})",
                details={"field": "parameters", "function_name": self.name},
            )


def _is_async(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` makes a coroutine to await: an ``async def`` function
    or method, a partial of one, or an object whose ``__call__`` is ``async def``."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__  # callable() holds (checked before): every such type has one
    )


def _check_keyword_callable(name: str, signature: inspect.Signature) -> None:
    """Refuse a function with positional-only parameters that have no default: runs pass
    parameters by keyword, so no run could ever call it."""
    stuck = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY
        and parameter.default is inspect.Parameter.empty
    ]
    if stuck:
        raise ValidationError(
            f"{name!r} takes {', '.join(stuck)} positionally only, without a default: runs "
            "pass parameters by keyword, so it could never be called; wrap it in a function "
            "with keyword parameters"
        )


class FunctionRegistry:
    """Maps names to callables. Thread-safe; re-registering a name replaces it."""

    def __init__(self) -> None:
        self._functions: dict[str, RegisteredFunction] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        module_id: str | None = None,
        description: str = "",
        rules: CallRules | None = None,
    ) -> RegisteredFunction:
        """Register ``function`` under ``name``.

        A function that declares a parameter named ``context`` receives the
        :class:`~chronolog.actors.executor.ExecutionContext` of each run in it. ``rules``:
        the parameters it takes, when not ``function``'s own (a stand-in's).
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 200 or not is_utf8(name):
            raise ValidationError(f"function name must be a non-empty string, got {name!r}")
        if not callable(function):
            raise ValidationError(f"{name!r}: {function!r} is not callable")
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            # Calling one only makes a generator: the body would never run.
            raise ValidationError(
                f"{name!r}: {function!r} is a generator function, whose body would never "
                "run; register a plain (or async) function that does the work"
            )
        signature: inspect.Signature | None
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None  # some builtins: nothing to read
        if signature is not None:
            _check_keyword_callable(name, signature)
        entry = RegisteredFunction(
            name=name,
            function=function,
            module_id=module_id,
            is_async=_is_async(function),
            accepts_context=signature is not None and "context" in signature.parameters,
            description=description or (inspect.getdoc(function) or "").split("\n", 1)[0],
            rules=CallRules.of(signature) if rules is None else rules,
        )
        with self._lock:
            self._functions[name] = entry
        return entry

    def get(self, name: str) -> RegisteredFunction:
        """The function registered as ``name``; :class:`UnknownFunctionError` otherwise."""
        with self._lock:
            entry = self._functions.get(name)
        if entry is None:
            known = ", ".join(sorted(self._functions)) or "none"
            raise UnknownFunctionError(
                f"no function registered as {name!r} (registered: {known})",
                details={"function_name": name},
            )
        return entry

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._functions

    def names(self) -> list[str]:
        """Registered names, sorted."""
        with self._lock:
            return sorted(self._functions)

    def all(self) -> list[RegisteredFunction]:
        """Every registered function, sorted by name."""
        with self._lock:
            return [self._functions[n] for n in sorted(self._functions)]


class _Registers(Protocol):
    def register_function(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        module_id: str | None = ...,
        description: str = ...,
    ) -> None: ...


def import_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValidationError(f"function {spec!r} must look like 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"cannot import {spec!r}: {exc}") from exc
    if not callable(target):
        raise ValidationError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def register_configured_functions(service: _Registers, settings: Settings) -> None:
    """Register the ``functions`` table of the settings (name -> ``module:callable``): all of
    them, or none when one cannot be imported."""
    imported = [(name, import_callable(spec)) for name, spec in sorted(settings.functions.items())]
    for name, function in imported:
        service.register_function(name, function, module_id="config")
