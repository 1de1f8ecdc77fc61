"""validate_target: which directories may be cleaned at all."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chronolog.errors import UnsafePathError, ValidationError
from chronolog.housekeeping import CleanupRules, validate_target
from chronolog.housekeeping.paths import normalise_path, protected_directories

RULES = CleanupRules(retention_days=1)


@contextmanager
def mounted(kind: list[str], target: Path) -> Iterator[None]:
    """Mount something at ``target`` for the test, or skip where mounting is not allowed."""
    result = subprocess.run(["mount", *kind, str(target)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here (needs CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


class TestAllowedRoots:
    def test_directory_inside_a_root_is_returned_normalised(self, tmp_path: Path) -> None:
        """A directory below an allowed root validates; the result is normalised."""
        (tmp_path / "logs").mkdir()
        assert validate_target(f"{tmp_path}//logs/./", RULES, allowed_roots=[tmp_path]) == str(
            tmp_path / "logs"
        )

    def test_the_root_itself_may_be_registered(self, tmp_path: Path) -> None:
        """An allowed root is itself a valid directory to clean."""
        assert validate_target(tmp_path, RULES, allowed_roots=[str(tmp_path)]) == str(tmp_path)

    def test_outside_every_root_is_unsafe(self, tmp_path: Path) -> None:
        """A sibling of the allowed root is refused."""
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with pytest.raises(UnsafePathError, match="outside the allowed roots"):
            validate_target(tmp_path / "b", RULES, allowed_roots=[tmp_path / "a"])

    def test_a_name_prefix_is_not_containment(self, tmp_path: Path) -> None:
        """'/x/ab' is not inside '/x/a': containment is by components."""
        (tmp_path / "ab").mkdir()
        with pytest.raises(UnsafePathError):
            validate_target(tmp_path / "ab", RULES, allowed_roots=[tmp_path / "a"])

    def test_no_roots_means_nothing_is_allowed(self, tmp_path: Path) -> None:
        """An empty allowed_roots refuses everything."""
        with pytest.raises(UnsafePathError, match="no allowed roots"):
            validate_target(tmp_path, RULES, allowed_roots=[])

    def test_relative_roots_are_invalid(self, tmp_path: Path) -> None:
        """Allowed roots must be absolute; a relative one is a ValidationError."""
        with pytest.raises(ValidationError, match="not absolute"):
            validate_target(tmp_path, RULES, allowed_roots=["logs"])

    def test_relative_directory_is_taken_from_the_cwd(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative directory is resolved against the current directory."""
        (tmp_path / "logs").mkdir()
        monkeypatch.chdir(tmp_path)
        assert validate_target("logs", RULES, allowed_roots=[tmp_path]) == str(tmp_path / "logs")


class TestProtected:
    def test_filesystem_root_is_refused(self) -> None:
        """'/' is never cleaned, even when allowed."""
        with pytest.raises(UnsafePathError, match="protected"):
            validate_target("/", RULES, allowed_roots=["/"])

    def test_home_and_its_ancestors_are_refused(self) -> None:
        """The home directory and every directory above it are refused."""
        home = os.path.expanduser("~")
        for path in (home, os.path.dirname(home)):
            if path == "/":
                continue
            with pytest.raises(UnsafePathError, match="protected"):
                validate_target(path, RULES, allowed_roots=["/"])
        assert home in protected_directories()

    def test_dot_dot_is_refused(self, tmp_path: Path) -> None:
        """'..' in the directory is refused rather than resolved."""
        (tmp_path / "a").mkdir()
        with pytest.raises(UnsafePathError, match=r"'\.\.'"):
            validate_target(f"{tmp_path}/a/../a", RULES, allowed_roots=[tmp_path])
        with pytest.raises(UnsafePathError):
            normalise_path("../x")

    @pytest.mark.parametrize("pattern", ["../*.log", "/var/log/*.log", "a/../../b"])
    def test_patterns_reaching_outside_are_refused(self, tmp_path: Path, pattern: str) -> None:
        """Patterns with '..' or absolute parts are refused at validation."""
        rules = CleanupRules(pattern=pattern, retention_days=1, recursive=True)
        with pytest.raises(UnsafePathError):
            validate_target(tmp_path, rules, allowed_roots=[tmp_path])

    def test_exclude_patterns_are_checked_too(self, tmp_path: Path) -> None:
        """An exclude glob with '..' is refused like a pattern."""
        rules = CleanupRules(retention_days=1, exclude=("../keep",))
        with pytest.raises(UnsafePathError):
            validate_target(tmp_path, rules, allowed_roots=[tmp_path])


class TestShape:
    def test_symlinked_directory_is_refused(self, tmp_path: Path) -> None:
        """The registered directory must not be a symlink, even to a directory inside the root."""
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            validate_target(tmp_path / "link", RULES, allowed_roots=[tmp_path])

    def test_symlink_on_the_way_is_refused(self, tmp_path: Path) -> None:
        """A symlink in any component of the path is refused (the path must be the real one)."""
        (tmp_path / "real" / "logs").mkdir(parents=True)
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            validate_target(tmp_path / "link" / "logs", RULES, allowed_roots=[tmp_path])

    def test_missing_directory_is_invalid(self, tmp_path: Path) -> None:
        """A directory that does not exist is a ValidationError."""
        with pytest.raises(ValidationError, match="does not exist"):
            validate_target(tmp_path / "nope", RULES, allowed_roots=[tmp_path])

    def test_a_file_is_not_a_directory(self, tmp_path: Path) -> None:
        """A regular file is a ValidationError, not an UnsafePathError."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(ValidationError, match="not a directory") as info:
            validate_target(tmp_path / "f", RULES, allowed_roots=[tmp_path])
        assert not isinstance(info.value, UnsafePathError)


class TestMountRoots:
    def test_an_existing_mount_root_is_refused(self) -> None:
        """A directory where another file system is mounted is refused by default."""
        shm = Path("/dev/shm")
        if not shm.is_dir() or os.stat(shm).st_dev == os.stat("/dev").st_dev:
            pytest.skip("/dev/shm is not a separate mount here")
        with pytest.raises(UnsafePathError, match="mount root"):
            validate_target(shm, RULES, allowed_roots=[shm])
        assert validate_target(shm, RULES, allowed_roots=[shm], allow_mount_roots=True) == str(shm)

    def test_a_tmpfs_mount_is_refused(self, tmp_path: Path) -> None:
        """A tmpfs mounted inside the allowed root is a mount root."""
        target = tmp_path / "mnt"
        target.mkdir()
        with mounted(["-t", "tmpfs", "-o", "size=1m", "none"], target):
            with pytest.raises(UnsafePathError, match="mount root"):
                validate_target(target, RULES, allowed_roots=[tmp_path])
            validate_target(target, RULES, allowed_roots=[tmp_path], allow_mount_roots=True)

    def test_a_bind_mount_of_the_same_file_system_is_refused(self, tmp_path: Path) -> None:
        """A bind mount keeps st_dev, so mountinfo must catch it."""
        (tmp_path / "src").mkdir()
        target = tmp_path / "bind"
        target.mkdir()
        with mounted(["--bind", str(tmp_path / "src")], target):
            assert os.stat(target).st_dev == os.stat(tmp_path).st_dev
            with pytest.raises(UnsafePathError, match="mount root"):
                validate_target(target, RULES, allowed_roots=[tmp_path])
