"""run_cleanup on real trees: policies against a model, dry run, budgets, empty dirs, locking."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog.errors import UnsafePathError, ValidationError
from chronolog.housekeeping import (
    CleanupBusyError,
    CleanupReport,
    CleanupRules,
    RemovalReason,
    engine,
    policy,
    run_cleanup,
    validate_target,
)
from chronolog.housekeeping.policy import FileFact

NOW = datetime(2030, 1, 1, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
DAY = 86_400


def write(
    root: Path, rel: str, size: int = 10, age_s: int = 30 * DAY, atime_age_s: int | None = None
) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    mtime = NOW_S - age_s
    atime = NOW_S - (age_s if atime_age_s is None else atime_age_s)
    os.utime(path, ns=(atime * 10**9, mtime * 10**9))
    return path


def files_under(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    }


def clean(root: Path, rules: CleanupRules, **kwargs: object) -> CleanupReport:
    kwargs.setdefault("allowed_roots", [str(root)])
    kwargs.setdefault("now", NOW)
    return run_cleanup(root, rules, **kwargs)  # type: ignore[arg-type]


# --- the policy model on disk ------------------------------------------------------------

NON_RECURSIVE_PATTERNS: dict[str, Callable[[str], bool]] = {
    "*": lambda p: "/" not in p,
    "*.log": lambda p: "/" not in p and p.endswith(".log"),
    "k*": lambda p: "/" not in p and p.startswith("k"),
}
RECURSIVE_PATTERNS: dict[str, Callable[[str], bool]] = {
    "**": lambda p: True,
    "**/*.log": lambda p: p.endswith(".log"),
    "a/**": lambda p: p.startswith("a/"),
    "*.log": lambda p: "/" not in p and p.endswith(".log"),
    "a/*": lambda p: p.startswith("a/") and p.count("/") == 1,
}
EXCLUDES: dict[tuple[str, ...], Callable[[str], bool]] = {
    (): lambda p: False,
    ("*.txt",): lambda p: "/" not in p and p.endswith(".txt"),
    ("**/k*",): lambda p: p.rsplit("/", 1)[-1].startswith("k"),
}

ages = st.one_of(st.sampled_from([0, DAY, 7 * DAY]), st.integers(-2 * DAY, 40 * DAY))
tree_files = st.lists(
    st.tuples(
        st.sampled_from(["", "a/", "a/b/", "c/"]),
        st.text("kxy", min_size=1, max_size=3),
        st.sampled_from([".log", ".txt"]),
        st.integers(0, 300),
        ages,
        ages,
    ),
    max_size=18,
    unique_by=lambda f: f[0] + f[1] + f[2],
)


@st.composite
def rule_sets(
    draw: st.DrawFn,
) -> tuple[CleanupRules, Callable[[str], bool], Callable[[str], bool], int | None]:
    recursive = draw(st.booleans())
    patterns = RECURSIVE_PATTERNS if recursive else NON_RECURSIVE_PATTERNS
    pattern = draw(st.sampled_from(sorted(patterns)))
    excludes = [e for e in EXCLUDES if recursive or all("/" not in g for g in e)]
    exclude = draw(st.sampled_from(excludes))
    retention_s = draw(st.none() | st.sampled_from([0, DAY, 7 * DAY]) | st.integers(0, 40 * DAY))
    max_files = draw(st.none() | st.integers(0, 12))
    max_bytes = draw(st.none() | st.integers(0, 3000))
    if retention_s is None and max_files is None and max_bytes is None:
        max_files = 3
    rules = CleanupRules(
        pattern=pattern,
        exclude=exclude,
        recursive=recursive,
        retention_days=None if retention_s is None else retention_s / DAY,
        max_files=max_files,
        max_total_bytes=max_bytes,
        age_basis=draw(st.sampled_from(["mtime", "atime"])),
    )
    return rules, patterns[pattern], EXCLUDES[exclude], retention_s


def expected_selection(
    tree: list[tuple[str, str, str, int, int, int]],
    rules: CleanupRules,
    pattern: Callable[[str], bool],
    exclude: Callable[[str], bool],
    retention_s: int | None,
) -> dict[str, tuple[RemovalReason, ...]]:
    """The documented policy, computed in the most direct way."""
    matched = []
    for folder, stem, ext, size, mtime_age, atime_age in tree:
        rel = folder + stem + ext
        if (rules.recursive or not folder) and pattern(rel) and not exclude(rel):
            age = mtime_age if rules.age_basis == "mtime" else atime_age
            matched.append((rel, size, age))
    newest_first = sorted(matched, key=lambda m: (m[2], tuple(m[0].split("/"))))
    selected: dict[str, list[RemovalReason]] = {}
    total = 0
    for rank, (rel, size, age) in enumerate(newest_first):
        reasons = selected.setdefault(rel, [])
        if retention_s is not None and age > retention_s:
            reasons.append("age")
        if rules.max_files is not None and rank >= rules.max_files:
            reasons.append("count")
        total += size
        if rules.max_total_bytes is not None and total > rules.max_total_bytes:
            reasons.append("size")
    return {rel: tuple(reasons) for rel, reasons in selected.items() if reasons}


class TestPoliciesOnDisk:
    @settings(
        max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(tree=tree_files, rule_set=rule_sets())
    def test_dry_run_and_real_run_remove_exactly_the_model_set(
        self,
        tmp_path: Path,
        tree: list[tuple[str, str, str, int, int, int]],
        rule_set: tuple[CleanupRules, Callable[[str], bool], Callable[[str], bool], int | None],
    ) -> None:
        """For random trees and rules, the dry run lists and the real run removes the model set."""
        rules, pattern, exclude, retention_s = rule_set
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        for folder, stem, ext, size, mtime_age, atime_age in tree:
            write(root, folder + stem + ext, size, mtime_age, atime_age)
        (root / "c").mkdir(exist_ok=True)  # a directory with nothing in it
        before = files_under(root)
        expected = expected_selection(tree, rules, pattern, exclude, retention_s)

        dry = clean(root, rules, dry_run=True)
        assert {r.path: r.reasons for r in dry.files} == expected
        assert {r.outcome for r in dry.files} <= {"would_remove"}
        assert dry.summary.files_selected == len(expected)
        assert dry.summary.files_removed == 0
        assert files_under(root) == before

        real = clean(root, rules)
        assert {r.path: r.reasons for r in real.files} == expected
        assert {r.outcome for r in real.files} <= {"removed"}
        assert files_under(root) == before - set(expected)
        sizes = {folder + stem + ext: size for folder, stem, ext, size, *_ in tree}
        assert real.summary.bytes_freed == sum(sizes[p] for p in expected)
        assert real.summary.files_matched == dry.summary.files_matched
        assert real.summary.errors == real.summary.skipped == 0

    def test_ctime_basis_uses_the_inode_change_time(self, tmp_path: Path) -> None:
        """With age_basis='ctime', an old mtime does not make a freshly created file old."""
        write(tmp_path, "a.log", age_s=100 * DAY)
        now = datetime.now(UTC)
        rules = CleanupRules(retention_days=1, age_basis="ctime")
        assert clean(tmp_path, rules, now=now).summary.files_removed == 0
        later = clean(tmp_path, rules, now=now + timedelta(days=2))
        assert [r.path for r in later.files] == ["a.log"]


# --- report --------------------------------------------------------------------------------


class TestReport:
    def test_records_are_bounded_but_counted(self, tmp_path: Path) -> None:
        """Beyond max_records the list is cut and flagged while the summary counts all."""
        for i in range(5):
            write(tmp_path, f"f{i}.log")
        report = clean(tmp_path, CleanupRules(retention_days=1), max_records=2)
        assert [r.path for r in report.files] == ["f0.log", "f1.log"]
        assert report.files_truncated
        assert report.summary.files_removed == 5
        assert files_under(tmp_path) == set()

    def test_report_round_trips_as_json(self, tmp_path: Path) -> None:
        """The report is a msgspec struct that encodes and decodes unchanged."""
        write(tmp_path, "a.log", size=7)
        report = clean(tmp_path, CleanupRules(retention_days=1))
        decoded = msgspec.json.decode(msgspec.json.encode(report), type=CleanupReport)
        assert decoded == report
        assert report.files[0].size == 7 and report.files[0].age_seconds == 30 * DAY
        assert report.started_at == NOW and report.directory == str(tmp_path)

    def test_naive_now_is_rejected(self, tmp_path: Path) -> None:
        """Ages need an aware instant; a naive datetime is a ValidationError."""
        with pytest.raises(ValidationError):
            clean(tmp_path, CleanupRules(retention_days=1), now=datetime(2030, 1, 1))

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_files_budget": 0},
            {"max_seconds_budget": 0},
            {"max_seconds_budget": float("nan")},
            {"max_records": -1},
            {"resume_after": "../x"},
            {"resume_after": "é"},
        ],
    )
    def test_bad_limits_are_rejected(self, tmp_path: Path, kwargs: dict[str, object]) -> None:
        """Budgets, record limits and cursors are checked before anything is touched."""
        write(tmp_path, "a.log")
        with pytest.raises(ValidationError):
            clean(tmp_path, CleanupRules(retention_days=1), **kwargs)
        assert files_under(tmp_path) == {"a.log"}

    @pytest.mark.parametrize(
        "rules",
        [
            CleanupRules(),
            CleanupRules(retention_days=-1),
            CleanupRules(retention_days=float("inf")),
            CleanupRules(max_files=-1),
            CleanupRules(max_total_bytes=True),
            CleanupRules(retention_days=1, age_basis="birth"),  # type: ignore[arg-type]
            CleanupRules(retention_days=1, pattern="a/*"),
        ],
    )
    def test_bad_rules_are_rejected(self, tmp_path: Path, rules: CleanupRules) -> None:
        """Rules that select nothing or are out of range are a ValidationError."""
        with pytest.raises(ValidationError):
            clean(tmp_path, rules)


# --- budgets and resuming ----------------------------------------------------------------


def drain(root: Path, rules: CleanupRules, **kwargs: object) -> list[CleanupReport]:
    """Run until no cursor is returned; bounded so a cursor bug cannot loop forever."""
    reports: list[CleanupReport] = []
    cursor = None
    for _ in range(200):
        report = clean(root, rules, resume_after=cursor, **kwargs)
        reports.append(report)
        cursor = report.resume_after
        if cursor is None:
            return reports
    raise AssertionError("the cursor never reached the end")


class TestBudgets:
    def test_file_budget_resumes_until_everything_is_done(self, tmp_path: Path) -> None:
        """Each run examines at most the budget and the runs together cover the whole tree."""
        names = {f"d{d}/f{i}.log" for d in range(3) for i in range(9)} | {"top.log"}
        for name in names:
            write(tmp_path, name)
        write(tmp_path, "d1/new.log", age_s=0)
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1)
        reports = drain(tmp_path, rules, max_files_budget=4)
        assert all(r.summary.files_examined <= 4 for r in reports)
        assert all(r.summary.budget_exhausted for r in reports[:-1])
        removed = [rec.path for r in reports for rec in r.files]
        assert sorted(removed) == sorted(names) and len(removed) == len(names)
        assert files_under(tmp_path) == {"d1/new.log"}

    def test_dry_run_pages_through_the_selection_once(self, tmp_path: Path) -> None:
        """A paginated dry run lists every selected file exactly once, in walk order."""
        for i in range(10):
            write(tmp_path, f"f{i}.log")
        reports = drain(tmp_path, CleanupRules(retention_days=1), max_files_budget=3, dry_run=True)
        listed = [rec.path for r in reports for rec in r.files]
        assert listed == [f"f{i}.log" for i in range(10)]
        assert len(files_under(tmp_path)) == 10

    def test_seconds_budget_stops_and_every_run_progresses(self, tmp_path: Path) -> None:
        """A clock that runs out at once still lets each run handle a file, then stop."""
        for i in range(6):
            write(tmp_path, f"f{i}.log")
        ticks = iter(range(0, 10**6, 10))
        reports = drain(
            tmp_path,
            CleanupRules(retention_days=1),
            max_seconds_budget=1.0,
            monotonic=lambda: float(next(ticks)),
        )
        assert len(reports) == 6
        assert all(r.summary.files_removed == 1 for r in reports)
        assert files_under(tmp_path) == set()

    def test_partial_count_selection_is_conservative(self, tmp_path: Path) -> None:
        """A budget-cut run with a count limit removes only files the full run would."""
        for i in range(12):
            write(tmp_path, f"f{i:02d}.log", age_s=(i + 1) * DAY)
        rules = CleanupRules(max_files=4)
        full = {r.path for r in clean(tmp_path, rules, dry_run=True).files}
        part = clean(tmp_path, rules, max_files_budget=7)
        assert {r.path for r in part.files} <= full
        assert part.resume_after is not None

    def test_cursor_survives_a_vanished_path(self, tmp_path: Path) -> None:
        """A cursor naming a file that no longer exists resumes at the next path."""
        for name in ("a.log", "b.log", "c.log", "d.log"):
            write(tmp_path, name)
        first = clean(tmp_path, CleanupRules(retention_days=1), max_files_budget=2, dry_run=True)
        assert first.resume_after == "b.log"
        (tmp_path / "b.log").unlink()
        second = clean(tmp_path, CleanupRules(retention_days=1), resume_after=first.resume_after)
        assert [r.path for r in second.files] == ["c.log", "d.log"]

    def test_cursor_inside_a_subdirectory(self, tmp_path: Path) -> None:
        """Resuming inside a directory skips its earlier entries and continues after it."""
        for name in ("a/x.log", "a/y.log", "b.log", "a.log"):
            write(tmp_path, name)
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1)
        report = clean(tmp_path, rules, resume_after="a/x.log")
        # Walk order compares components: ("a", "y.log") < ("a.log",) < ("b.log",).
        assert [r.path for r in report.files] == ["a/y.log", "a.log", "b.log"]
        assert files_under(tmp_path) == {"a/x.log"}


# --- empty directories -------------------------------------------------------------------


class TestEmptyDirs:
    def test_emptied_directories_go_but_the_root_stays(self, tmp_path: Path) -> None:
        """Directories the run emptied (and already empty ones) are removed, deepest first."""
        root = tmp_path / "root"
        write(root, "a/b/c/old.log")
        write(root, "a/old.log")
        write(root, "keep/new.log", age_s=0)
        (root / "empty").mkdir()
        (root / "linkdir").mkdir()
        (root / "linkdir" / "l").symlink_to("/nonexistent")
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1, remove_empty_dirs=True)
        report = clean(root, rules)
        assert report.summary.dirs_removed == 4  # a, a/b, a/b/c, empty
        assert sorted(os.listdir(root)) == ["keep", "linkdir"]

    def test_a_root_left_empty_is_kept(self, tmp_path: Path) -> None:
        """Even when the run empties everything, the registered directory itself stays."""
        root = tmp_path / "root"
        write(root, "a/old.log")
        write(root, "old.log")
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1, remove_empty_dirs=True)
        assert clean(root, rules).summary.dirs_removed == 1
        assert root.is_dir() and os.listdir(root) == []

    def test_nothing_but_files_without_the_flag_or_in_a_dry_run(self, tmp_path: Path) -> None:
        """Without remove_empty_dirs, or in a dry run, every directory stays."""
        write(tmp_path, "a/old.log")
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1, remove_empty_dirs=True)
        assert clean(tmp_path, rules, dry_run=True).summary.dirs_removed == 0
        assert (
            clean(
                tmp_path, msgspec.structs.replace(rules, remove_empty_dirs=False)
            ).summary.files_removed
            == 1
        )
        assert (tmp_path / "a").is_dir()

    def test_excluded_directories_are_neither_entered_nor_removed(self, tmp_path: Path) -> None:
        """An exclude glob that matches a directory prunes it from the walk."""
        write(tmp_path, "cache/old.log")
        (tmp_path / "cache" / "sub").mkdir()
        rules = CleanupRules(
            pattern="**",
            recursive=True,
            retention_days=1,
            remove_empty_dirs=True,
            exclude=("cache",),
        )
        assert clean(tmp_path, rules).summary.files_examined == 0
        assert files_under(tmp_path) == {"cache/old.log"} and (tmp_path / "cache/sub").is_dir()

    def test_a_file_created_meanwhile_keeps_its_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """rmdir refuses a directory that gained an entry after the scan."""
        write(tmp_path, "a/old.log")
        hook_after_scan(monkeypatch, lambda: write(tmp_path, "a/late.log", age_s=0))
        rules = CleanupRules(pattern="**", recursive=True, retention_days=1, remove_empty_dirs=True)
        report = clean(tmp_path, rules)
        assert report.summary.dirs_removed == 0 and report.summary.errors == 0
        assert files_under(tmp_path) == {"a/late.log"}


def hook_after_scan(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run ``action`` between the scan and the removals (where races matter most)."""

    def select(
        facts: list[FileFact], rules: CleanupRules, now_ns: int
    ) -> list[tuple[RemovalReason, ...]]:
        action()
        return policy.select(facts, rules, now_ns)

    monkeypatch.setattr(engine, "select", select)


# --- one run at a time ---------------------------------------------------------------------


class TestLocking:
    def test_second_run_in_the_process_is_busy(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While a run holds a directory, another run over it raises CleanupBusyError."""
        write(tmp_path, "a.log")
        entered, release = threading.Event(), threading.Event()

        def block() -> None:
            entered.set()
            release.wait(10)

        hook_after_scan(monkeypatch, block)
        results: list[CleanupReport] = []
        worker = threading.Thread(
            target=lambda: results.append(clean(tmp_path, CleanupRules(retention_days=1)))
        )
        worker.start()
        try:
            assert entered.wait(10)
            with pytest.raises(CleanupBusyError, match="this process"):
                clean(tmp_path, CleanupRules(retention_days=1), dry_run=True)
        finally:
            release.set()
            worker.join(10)
        assert results[0].summary.files_removed == 1
        # Released afterwards: the next run goes ahead.
        assert clean(tmp_path, CleanupRules(retention_days=1)).summary.files_examined == 0

    def test_run_in_another_process_is_busy(self, tmp_path: Path) -> None:
        """A flock held by another process on the directory makes the run busy."""
        write(tmp_path, "a.log")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys\n"
                f"fd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('locked', flush=True)\n"
                "sys.stdin.read()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            with pytest.raises(CleanupBusyError, match="another process") as info:
                clean(tmp_path, CleanupRules(retention_days=1))
            assert info.value.code == "cleanup_busy"
            assert files_under(tmp_path) == {"a.log"}
        finally:
            holder.communicate("", timeout=10)
        assert clean(tmp_path, CleanupRules(retention_days=1)).summary.files_removed == 1


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "outside"
    path.mkdir()
    yield path


class TestValidation:
    def test_unsafe_target_raises_before_anything_is_removed(
        self, tmp_path: Path, outside: Path
    ) -> None:
        """A directory outside the allowed roots is refused and nothing is removed."""
        write(outside, "a.log")
        with pytest.raises(UnsafePathError):
            run_cleanup(
                outside,
                CleanupRules(retention_days=1),
                allowed_roots=[str(tmp_path / "x")],
                now=NOW,
            )
        assert files_under(outside) == {"a.log"}


class TestProtectedDirectories:
    """The scheduler's own data directory is never cleaned, whatever a registration says."""

    def test_a_protected_directory_and_what_lies_inside_it_are_refused(
        self, tmp_path: Path
    ) -> None:
        data = tmp_path / "data"
        write(data, "sub/old.log")
        for directory in (data, data / "sub"):
            with pytest.raises(UnsafePathError, match="scheduler's own data"):
                validate_target(
                    directory,
                    CleanupRules(retention_days=1),
                    allowed_roots=[str(tmp_path)],
                    protected=[data],
                )
            with pytest.raises(UnsafePathError):
                clean(directory, CleanupRules(retention_days=1), protected=[data])
        assert files_under(data) == {"sub/old.log"}

    @pytest.mark.parametrize("dry_run", [True, False])
    def test_a_run_above_it_never_enters_it(self, tmp_path: Path, dry_run: bool) -> None:
        """A recursive run over an ancestor selects, removes and empties nothing inside the
        protected directory (named through a symlink and through '..' here: it is compared
        by identity), and everything else as usual."""
        data = tmp_path / "app" / "data"
        for rel in ("events.sqlite3", "chronolog.lock", "nested/deep.log"):
            write(data, rel)
        write(tmp_path, "app/old.log")
        write(tmp_path, "app/cache/old.tmp")
        link = tmp_path / "data-link"
        link.symlink_to(data)
        report = clean(
            tmp_path / "app",
            CleanupRules(pattern="**", recursive=True, retention_days=1, remove_empty_dirs=True),
            dry_run=dry_run,
            protected=[link, tmp_path / "app" / "cache" / ".." / "data"],
        )
        assert sorted(record.path for record in report.files) == ["cache/old.tmp", "old.log"]
        assert files_under(data) == {"events.sqlite3", "chronolog.lock", "nested/deep.log"}
        if not dry_run:
            assert files_under(tmp_path / "app") == {
                "data/events.sqlite3",
                "data/chronolog.lock",
                "data/nested/deep.log",
            }
