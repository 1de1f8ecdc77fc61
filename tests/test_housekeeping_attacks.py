"""Attacks on the cleanup engine: nothing outside the registered directory is ever removed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from chronolog.housekeeping import (
    CleanupReport,
    CleanupRules,
    RemovalReason,
    engine,
    policy,
    run_cleanup,
)
from chronolog.housekeeping.paths import DIR_FLAGS
from chronolog.housekeeping.policy import FileFact
from chronolog.housekeeping.remove import FILE_FLAGS

NOW = datetime(2030, 1, 1, tzinfo=UTC)
OLD_NS = int(NOW.timestamp() - 30 * 86_400) * 10**9
ALL = CleanupRules(pattern="**", recursive=True, retention_days=1)


def old_file(path: Path, content: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def clean(root: Path, rules: CleanupRules = ALL, **kwargs: object) -> CleanupReport:
    return run_cleanup(root, rules, allowed_roots=[root], now=NOW, **kwargs)  # type: ignore[arg-type]


def tree(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in names + dirs
    }


def hook_after_scan(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run ``action`` between the scan and the removals (where races matter most)."""

    def select(
        facts: list[FileFact], rules: CleanupRules, now_ns: int
    ) -> list[tuple[RemovalReason, ...]]:
        action()
        return policy.select(facts, rules, now_ns)

    monkeypatch.setattr(engine, "select", select)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A root and, beside it, an outside directory full of old files the attacker targets."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    for i in range(10):
        old_file(outside / f"f{i}.log", b"victim")
    old_file(outside / "victim.log", b"victim")
    return root, outside


def assert_outside_intact(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == sorted(
        [f"f{i}.log" for i in range(10)] + ["victim.log"]
    )
    assert all(p.read_bytes() == b"victim" for p in outside.iterdir())


class TestSwapRaces:
    def test_directory_swapped_for_a_symlink_during_runs(self, layout: tuple[Path, Path]) -> None:
        """A thread swapping a subdirectory for a symlink outside, 200 times, never gets outside."""
        root, outside = layout
        (root / "sub").mkdir()
        real_fd = os.open(root / "sub", os.O_RDONLY | os.O_DIRECTORY)
        stop = threading.Event()

        def attacker() -> None:
            for _ in range(200):
                os.rename(root / "sub", root / "sub.hidden")
                os.symlink(outside, root / "sub")
                os.symlink(outside / "victim.log", root / "top.log")
                time.sleep(0.0005)
                os.unlink(root / "sub")
                os.unlink(root / "top.log")
                os.rename(root / "sub.hidden", root / "sub")
                time.sleep(0.0005)
            stop.set()

        thread = threading.Thread(target=attacker)
        thread.start()
        removed_inside = runs = 0
        try:
            while not stop.is_set() and thread.is_alive():
                for i in range(10):  # refill the real directory through its own fd
                    fd = os.open(
                        f"f{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=real_fd
                    )
                    os.utime(fd, ns=(OLD_NS, OLD_NS))
                    os.close(fd)
                report = clean(root)
                runs += 1
                removed_inside += report.summary.files_removed
                assert_outside_intact(outside)
        finally:
            thread.join(30)
            os.close(real_fd)
        assert stop.is_set()  # the attacker finished all its swaps
        assert_outside_intact(outside)
        assert runs > 0 and removed_inside > 0  # the race was really exercised

    def test_directory_swapped_between_scan_and_removal(
        self, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory replaced by a symlink after the scan is not re-entered: files are skipped."""
        root, outside = layout
        for i in range(10):
            old_file(root / "sub" / f"f{i}.log")

        def swap() -> None:
            os.rename(root / "sub", root / "sub.moved")
            os.symlink(outside, root / "sub")

        hook_after_scan(monkeypatch, swap)
        report = clean(root)
        assert report.summary.files_removed == 0 and report.summary.skipped == 10
        assert all("directory" in (r.error or "") for r in report.files)
        assert_outside_intact(outside)
        assert len(list((root / "sub.moved").iterdir())) == 10

    def test_directory_replaced_by_another_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A different directory renamed into place after the scan fails the identity check."""
        root = tmp_path / "root"
        old_file(root / "sub" / "a.log")
        old_file(root / "other" / "a.log")
        monkeypatch.setattr(
            engine, "select", _swap_then(policy.select, root / "sub", root / "other")
        )
        report = clean(root, CleanupRules(pattern="sub/*", recursive=True, retention_days=1))
        assert [(r.path, r.outcome) for r in report.files] == [("sub/a.log", "skipped")]
        assert (root / "sub" / "a.log").exists() and (root / "sub.old" / "a.log").exists()

    def test_file_swapped_for_a_symlink_between_scan_and_removal(
        self, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file replaced by a symlink to an outside file is skipped; the link and target stay."""
        root, outside = layout
        old_file(root / "a.log")

        def swap() -> None:
            (root / "a.log").unlink()
            (root / "a.log").symlink_to(outside / "victim.log")

        hook_after_scan(monkeypatch, swap)
        report = clean(root)
        assert [(r.outcome, r.error) for r in report.files] == [
            ("skipped", "replaced by a symbolic link")
        ]
        assert (root / "a.log").is_symlink()
        assert_outside_intact(outside)

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            (lambda p: p.write_bytes(b"longer content"), "changed since the scan"),
            (lambda p: old_file(p.with_name("new")).rename(p), "changed since the scan"),
            (lambda p: os.chmod(p, 0o600), "changed since the scan"),
            (lambda p: os.utime(p, ns=(OLD_NS, OLD_NS + 1)), "changed since the scan"),
            (lambda p: p.unlink(), "vanished before removal"),
        ],
        ids=["rewritten", "replaced", "chmod", "touched", "vanished"],
    )
    def test_file_changed_since_the_scan_is_skipped(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        change: Callable[[Path], object],
        reason: str,
    ) -> None:
        """Size, inode, mtime or ctime differing from the scan (or a vanished file) means skip."""
        target = old_file(tmp_path / "a.log")
        old_file(tmp_path / "b.log")
        hook_after_scan(monkeypatch, lambda: change(target))
        report = clean(tmp_path)
        assert [(r.path, r.outcome, r.error) for r in report.files] == [
            ("a.log", "skipped", reason),
            ("b.log", "removed", None),
        ]
        assert report.summary.skipped == 1 and report.summary.errors == 0


def _swap_then(real: Callable[..., object], sub: Path, other: Path) -> Callable[..., object]:
    def select(*args: object) -> object:
        os.rename(sub, sub.with_name("sub.old"))
        os.rename(other, sub)
        return real(*args)

    return select


class TestLinks:
    def test_symlinks_are_neither_followed_nor_removed(self, layout: tuple[Path, Path]) -> None:
        """Old-looking symlinks to outside files and directories are left alone."""
        root, outside = layout
        (root / "file.log").symlink_to(outside / "victim.log")
        (root / "dir").symlink_to(outside)
        (root / "dangling.log").symlink_to(root / "nowhere")
        for link in ("file.log", "dir", "dangling.log"):
            os.utime(root / link, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
        report = clean(
            root, CleanupRules(pattern="**", recursive=True, retention_days=0, max_files=0)
        )
        assert report.summary.files_examined == 0 and report.files == ()
        assert report.errors == ()  # a symlink is simply not ours: no error, no attempt
        assert tree(root) == {"file.log", "dir", "dangling.log"}
        assert_outside_intact(outside)

    def test_symlinked_root_is_refused(self, layout: tuple[Path, Path]) -> None:
        """Registering a symlink that points outside is refused before any removal."""
        root, outside = layout
        (root / "link").symlink_to(outside)
        with pytest.raises(Exception, match="symbolic link"):
            run_cleanup(root / "link", ALL, allowed_roots=[root], now=NOW)
        assert_outside_intact(outside)

    def test_hard_link_removes_only_the_inside_name(self, layout: tuple[Path, Path]) -> None:
        """Unlinking a hard link inside the root leaves the outside name and its data intact."""
        root, outside = layout
        os.link(outside / "victim.log", root / "link.log")
        report = clean(root)
        assert [(r.path, r.outcome) for r in report.files] == [("link.log", "removed")]
        assert report.summary.bytes_freed == 0  # the data lives on under the outside name
        assert_outside_intact(outside)

    def test_mounted_file_system_inside_the_root_is_not_entered(self, tmp_path: Path) -> None:
        """A file system mounted below the root is skipped by the walk."""
        old_file(tmp_path / "a.log")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
        try:
            old_file(mnt / "b.log")
            report = clean(tmp_path, msgspec.structs.replace(ALL, remove_empty_dirs=True))
            assert [r.path for r in report.files] == ["a.log"]
            assert report.summary.files_examined == 1  # the mount was not even entered
            assert (mnt / "b.log").exists()
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@contextmanager
def held_open(path: Path, mode: str) -> Iterator[None]:
    """Another process holds ``path`` open with ``mode`` until the block ends."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys\nf = open({str(path)!r}, {mode!r})\n"
            "print('open', flush=True)\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        yield
    finally:
        proc.communicate("", timeout=10)


class TestOpenFiles:
    def test_file_open_for_writing_is_skipped(self, tmp_path: Path) -> None:
        """A file another process is writing stays, reported as skipped; later runs remove it."""
        target = old_file(tmp_path / "busy.log")
        old_file(tmp_path / "idle.log")
        with held_open(target, "ab"):
            report = clean(tmp_path)
            assert [(r.path, r.outcome) for r in report.files] == [
                ("busy.log", "skipped"),
                ("idle.log", "removed"),
            ]
            assert report.files[0].error == "open for writing by a process"
            assert target.exists()
        assert clean(tmp_path).summary.files_removed == 1
        assert not target.exists()

    def test_file_open_for_reading_is_removed(self, tmp_path: Path) -> None:
        """A reader does not protect a file: only writers do."""
        target = old_file(tmp_path / "read.log")
        with held_open(target, "rb"):
            assert clean(tmp_path).summary.files_removed == 1
        assert not target.exists()

    def test_lease_notification_cannot_kill_the_process(self, tmp_path: Path) -> None:
        """A writer opening the file while the lease is held does not kill us (with a control)."""
        target = old_file(tmp_path / "a.log")
        script = textwrap.dedent(
            f"""
            import fcntl, os, subprocess, sys, time
            from chronolog.housekeeping import writers
            real = fcntl.fcntl
            def slow(fd, cmd, arg=0):
                result = real(fd, cmd, arg)
                if cmd == fcntl.F_SETLEASE and arg == fcntl.F_RDLCK:
                    subprocess.Popen([sys.executable, "-c", "open({str(target)!r}, 'ab').close()"])
                    time.sleep(0.5)  # the writer blocks in open(); the kernel notifies us
                return result
            fcntl.fcntl = slow
            if sys.argv[1] == "unprotected":
                writers.lease_signal = lambda: 0  # plain SIGIO with its default action
            fd = os.open({str(target)!r}, os.O_RDONLY)
            print(writers.WriterProbe().check(fd), flush=True)
            """
        )
        safe = subprocess.run(
            [sys.executable, "-c", script, "protected"], capture_output=True, text=True, timeout=30
        )
        assert (safe.returncode, safe.stdout.strip()) == (0, "free"), safe.stderr
        control = subprocess.run(
            [sys.executable, "-c", script, "unprotected"], capture_output=True, timeout=30
        )
        assert control.returncode == -signal.SIGIO


class TestErrors:
    def test_permission_denied_on_unlink_is_reported_and_the_run_goes_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unlink failing with EACCES is an error record; the other files are removed."""
        for name in ("a.log", "b.log", "c.log"):
            old_file(tmp_path / name)
        real_unlink = os.unlink

        def unlink(path: str, *, dir_fd: int | None = None) -> None:
            if path == "b.log":
                raise PermissionError(errno.EACCES, "Permission denied")
            real_unlink(path, dir_fd=dir_fd)

        monkeypatch.setattr(os, "unlink", unlink)
        report = clean(tmp_path)
        assert [(r.path, r.outcome, r.error) for r in report.files] == [
            ("a.log", "removed", None),
            ("b.log", "error", "Permission denied"),
            ("c.log", "removed", None),
        ]
        assert report.summary.errors == 1 and report.errors == ("b.log: Permission denied",)
        assert tree(tmp_path) == {"b.log"}

    def test_unreadable_file_is_identity_checked_by_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unopenable file is identity-checked by name and counted as unchecked for writers."""
        old_file(tmp_path / "a.log")
        real_open = os.open

        def deny(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if flags == FILE_FLAGS:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(os, "open", deny)
        report = clean(tmp_path)
        assert report.summary.files_removed == 1 and report.writers_unchecked == 1

    def test_unreadable_directory_is_reported_and_the_run_goes_on(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A subdirectory that cannot be opened is an error; its siblings are still cleaned."""
        old_file(tmp_path / "locked" / "a.log")
        old_file(tmp_path / "open" / "b.log")
        real_open = os.open

        def deny(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if path == "locked" and flags == DIR_FLAGS:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(os, "open", deny)
        report = clean(tmp_path)
        assert [r.path for r in report.files] == ["open/b.log"]
        assert report.errors == ("locked: cannot enter directory: Permission denied",)
        assert report.summary.errors == 1


class TestNonUtf8Names:
    def test_undecodable_names_are_removed_and_reported_lossily(self, tmp_path: Path) -> None:
        """Names that are not UTF-8 are handled exactly and reported with \\x escapes."""
        raw_dir = os.fsencode(tmp_path)
        for raw in (b"\xff\xfe.log", b"ok.log"):
            fd = os.open(raw_dir + b"/" + raw, os.O_WRONLY | os.O_CREAT, 0o644)
            os.utime(fd, ns=(OLD_NS, OLD_NS))
            os.close(fd)
        report = clean(tmp_path)
        assert [(r.path, r.path_is_lossy) for r in report.files] == [
            ("ok.log", False),
            ("\\xff\\xfe.log", True),
        ]
        assert msgspec.json.decode(msgspec.json.encode(report), type=CleanupReport) == report
        assert os.listdir(raw_dir) == []

    def test_cursor_round_trips_undecodable_names(self, tmp_path: Path) -> None:
        """A resume cursor on a non-UTF-8 name is ASCII and resumes exactly after it."""
        raw_dir = os.fsencode(tmp_path)
        for raw in (b"a\xff.log", b"a\xfe.log", b"b.log"):
            fd = os.open(raw_dir + b"/" + raw, os.O_WRONLY | os.O_CREAT, 0o644)
            os.utime(fd, ns=(OLD_NS, OLD_NS))
            os.close(fd)
        first = clean(tmp_path, max_files_budget=1, dry_run=True)
        assert first.resume_after is not None and first.resume_after.isascii()
        rest = clean(tmp_path, resume_after=first.resume_after)
        assert len(rest.files) == 2 and first.files[0].path not in {r.path for r in rest.files}
        assert len(os.listdir(raw_dir)) == 1
