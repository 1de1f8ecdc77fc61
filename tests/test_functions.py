"""The function registry's way in from configuration: ``module:callable`` specs."""

from __future__ import annotations

import os.path
import re
from collections import OrderedDict
from typing import Any

import pytest

from chronolog import Settings
from chronolog.errors import ValidationError
from chronolog.functions import FunctionRegistry, import_callable, register_configured_functions


class TestImportCallable:
    def test_a_module_attribute(self) -> None:
        assert import_callable("os.path:join") is os.path.join

    def test_a_dotted_attribute(self) -> None:
        assert import_callable("collections:OrderedDict.fromkeys") == OrderedDict.fromkeys

    @pytest.mark.parametrize(
        ("spec", "says"),
        [
            ("os.path.join", "must look like 'package.module:function'"),
            (":join", "must look like"),
            ("os.path:", "must look like"),
            ("no_such_module_here:job", "cannot import 'no_such_module_here:job'"),
            ("os.path:no_such_function", "cannot import 'os.path:no_such_function'"),
            ("math:pi", "is not callable"),
        ],
    )
    def test_bad_specs_say_what_is_wrong(self, spec: str, says: str) -> None:
        with pytest.raises(ValidationError, match=re.escape(says)):
            import_callable(spec)


class _Service:
    """What ``register_configured_functions`` needs of a facade: ``register_function``."""

    def __init__(self) -> None:
        self.registry = FunctionRegistry()

    def register_function(self, name: str, function: Any, **kwargs: Any) -> None:
        self.registry.register(name, function, **kwargs)


class TestConfiguredFunctions:
    def test_each_entry_is_registered_under_the_config_module(self) -> None:
        service = _Service()
        settings = Settings(functions={"join": "os.path:join", "base": "os.path:basename"})
        register_configured_functions(service, settings)
        assert service.registry.names() == ["base", "join"]
        entry = service.registry.get("join")
        assert entry.function is os.path.join
        assert entry.module_id == "config"

    def test_one_bad_entry_registers_none(self) -> None:
        """Every spec is imported before any is registered: a bad table changes nothing."""
        service = _Service()
        settings = Settings(functions={"a_join": "os.path:join", "b_bad": "os.path:nope"})
        with pytest.raises(ValidationError, match=re.escape("os.path:nope")):
            register_configured_functions(service, settings)
        assert service.registry.names() == []


def _generator() -> Any:
    yield 1


async def _async_generator() -> Any:
    yield 1


def _positional(first: int, /, second: int = 0) -> int:
    return first + second


def _positional_with_default(first: int = 1, /, second: int = 0) -> int:
    return first + second


class _AsyncCallable:
    async def __call__(self, n: int = 1) -> int:
        return n


class _Callable:
    def __call__(self, n: int = 1) -> int:
        return n


class TestRegister:
    """What ``register`` refuses: functions no run could ever call as meant."""

    @pytest.mark.parametrize(
        ("function", "says"),
        [
            (_generator, "generator function, whose body would never run"),
            (_async_generator, "generator function, whose body would never run"),
            (_positional, "takes first positionally only, without a default"),
            (len, "takes obj positionally only"),
        ],
    )
    def test_functions_no_run_could_call_are_refused(self, function: Any, says: str) -> None:
        registry = FunctionRegistry()
        with pytest.raises(ValidationError, match=re.escape(says)):
            registry.register("job", function)
        assert registry.names() == []

    def test_a_name_with_a_lone_surrogate_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="function name"):
            FunctionRegistry().register("job\udcff", _Callable())

    def test_a_positional_parameter_with_a_default_is_fine(self) -> None:
        entry = FunctionRegistry().register("job", _positional_with_default)
        entry.check_call({"second": 2})

    @pytest.mark.parametrize(
        ("function", "is_async"),
        [(_AsyncCallable(), True), (_Callable(), False), (_positional_with_default, False)],
    )
    def test_an_object_with_an_async_call_is_awaited(self, function: Any, is_async: bool) -> None:
        """An object whose ``__call__`` is ``async def`` runs on the event loop like an
        ``async def`` function (it used to run on a thread, leaving a coroutine unawaited)."""
        assert FunctionRegistry().register("job", function).is_async is is_async
