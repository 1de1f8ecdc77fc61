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
