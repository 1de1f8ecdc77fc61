"""How a command-line invocation reaches a data directory.

If no scheduler holds the directory, the command starts chronolog in maintenance mode
(``fire_timers=False``): commands go through the real facade and its actors, queries read
the real projections, and nothing fires on its own. If a scheduler is running there, read
commands use a private DuckDB rebuilt from the SQLite log opened read-only (safe alongside
the running scheduler); commands that change something are refused with a clear error.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from chronolog.errors import ChronologError, StoreLockedError
from chronolog.functions import register_configured_functions
from chronolog.module import AppContext, SchedulerModule
from chronolog.projections import rebuild_private
from chronolog.service import SchedulerService
from chronolog.settings import Settings
from chronolog.store.sqlite import DB_FILENAME

#: Name prefix of the directories that hold a command's private snapshot.
SNAPSHOT_PREFIX = "chronolog-cli-"


class DataDirBusyError(ChronologError):
    """A scheduler is running on the data directory, so this command cannot change it."""

    code = "busy"


class NoDataError(ChronologError):
    """The data directory holds no chronolog log."""

    code = "no_data"


def _snapshot_directory(data_path: Path) -> Path:
    """A new directory for a private snapshot: in the system's temporary directory, or in
    the data directory when there is none (a container whose root file system is
    read-only)."""
    try:
        return Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    except OSError:  # "No usable temporary directory found", or it became read-only
        return Path(tempfile.mkdtemp(prefix=f".{SNAPSHOT_PREFIX}", dir=data_path))


class Workspace:
    """One command's access to a data directory: a live maintenance instance or a snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.module: SchedulerModule | None = None
        self.snapshot_dir: Path | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None

    @property
    def live(self) -> bool:
        """Whether commands can change the data directory."""
        return self.module is not None

    @property
    def service(self) -> SchedulerService:
        """The facade (live mode only)."""
        if self.module is None:
            raise DataDirBusyError(
                f"a scheduler is running on {self.settings.data_dir}; stop it to change tasks "
                "from the command line (reads keep working)"
            )
        return self.module.service

    def open(self, *, write: bool, progress: Callable[[int, int], None] | None = None) -> None:
        """Start a maintenance instance, or fall back to a read-only snapshot."""
        log_path = self.settings.data_path / DB_FILENAME
        if not log_path.exists() and not write:
            raise NoDataError(f"no chronolog data in {self.settings.data_dir} (no {DB_FILENAME})")
        # In this process whatever the settings say: it reads the projections directly.
        module = SchedulerModule(self.settings.replace(engine="thread"), fire_timers=False)
        module.register(AppContext())
        register_configured_functions(module.service, self.settings)
        try:
            module.start_blocking()
        except StoreLockedError:
            if write:
                raise DataDirBusyError(
                    f"a scheduler is running on {self.settings.data_dir}; stop it to change "
                    "tasks from the command line (reads keep working)"
                ) from None
            self._open_snapshot(progress)
            return
        self.module = module

    def _open_snapshot(self, progress: Callable[[int, int], None] | None) -> None:
        self.snapshot_dir = _snapshot_directory(self.settings.data_path)
        path = self.snapshot_dir / "snapshot.duckdb"
        rebuild_private(self.settings.data_path, path)
        if progress is not None:
            progress(1, 1)
        self._conn = duckdb.connect(str(path), read_only=True)

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection on the projections, caught up with the log."""
        if self.module is not None:
            projector = self.module.require_projector()
            runtime = self.module.require_runtime()
            projector.wait_for_position(runtime.store.last_position(), 30)
            cursor = projector.reader()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        assert self._conn is not None
        yield self._conn

    def close(self) -> None:
        """Stop the maintenance instance or drop the snapshot."""
        if self.module is not None:
            self.module.stop_blocking()
            self.module = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.snapshot_dir is not None:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
            self.snapshot_dir = None
