"""The store contract suite, run against every backend."""

from __future__ import annotations

import shutil
import tempfile

from chronolog.store import EventStore, InMemoryEventStore, SQLiteEventStore
from chronolog.testing import EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    def create_store(self) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteEventStore(EventStoreContract):
    def create_store(self) -> EventStore:
        self.data_dir = tempfile.mkdtemp(prefix="chronolog-store-")
        return SQLiteEventStore(self.data_dir)

    def teardown_method(self) -> None:
        super().teardown_method()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class TestSQLiteEventStoreOneStatementCommits(TestSQLiteEventStore):
    def create_store(self) -> EventStore:
        self.data_dir = tempfile.mkdtemp(prefix="chronolog-store-")
        return SQLiteEventStore(self.data_dir, one_statement_commits=True)
