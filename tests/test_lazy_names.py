"""Package names loaded on first use: every advertised name resolves, others are errors."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import chronolog
import chronolog.projections


@pytest.mark.parametrize("package", [chronolog, chronolog.projections])
def test_every_advertised_name_resolves(package: object) -> None:
    for name in package.__all__:  # type: ignore[attr-defined]
        assert getattr(package, name) is not None, name


def test_a_submodule_name_is_the_submodule() -> None:
    assert chronolog.projections.queries is importlib.import_module("chronolog.projections.queries")


@pytest.mark.parametrize("package", [chronolog, chronolog.projections])
def test_an_unknown_name_is_an_attribute_error(package: object) -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        package.nothing_here  # type: ignore[attr-defined]  # noqa: B018


def test_row_types_load_without_duckdb() -> None:
    """What a process-engine host unpickles (task rows, pages) does not import DuckDB."""
    code = (
        "import sys; from chronolog.projections import TaskRow, Page; "
        "from chronolog.housekeeping.registrations import RunOutcome; "
        "print('duckdb' in sys.modules, 'pykka' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
