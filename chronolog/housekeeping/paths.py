"""Which directories may be cleaned, and opening one without trusting its path twice.

The registered directory is opened by walking from ``/`` one component at a time with
``O_NOFOLLOW``: a symbolic link anywhere on the path is refused, so the directory we hold
is exactly the one the textual path names, and the allowed-roots check (done on that text)
is a check on the real location. Everything after that goes through the returned fd.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import stat
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import NamedTuple

from chronolog.errors import UnsafePathError, ValidationError
from chronolog.housekeeping.names import display

#: Flags for every directory the engine opens: never follow a link, never leak the fd.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

PathArg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class Target(NamedTuple):
    """An opened, validated cleanup directory. The caller owns (and closes) ``fd``."""

    path: str
    fd: int
    dev: int
    ino: int
    #: ``(st_dev, st_ino)`` of protected directories: the walk never enters them.
    skip: frozenset[tuple[int, int]] = frozenset()


def normalise_path(value: PathArg, *, what: str = "directory") -> str:
    """An absolute, normalised path; relative paths are taken from the current directory.

    ``..`` components are refused outright (:class:`UnsafePathError`): resolving them
    lexically can disagree with the kernel when a symlink precedes them.
    """
    try:
        raw = os.fsdecode(os.fspath(value))
    except TypeError:
        raise ValidationError(f"{what} must be a path, got {type(value).__name__}") from None
    if not raw or "\0" in raw:
        raise ValidationError(f"{what} {display(raw)!r} is empty or contains NUL")
    if ".." in raw.split("/"):
        raise UnsafePathError(f"{what} {display(raw)!r} contains '..'")
    if not raw.startswith("/"):
        raw = os.path.join(os.getcwd(), raw)
    # normpath keeps a leading '//' (POSIX leaves it implementation-defined); Linux does not.
    return os.path.normpath("/" + raw.lstrip("/"))


def protected_directories() -> set[str]:
    """Directories that are never cleaned: ``/``, the home directory and its ancestors."""
    homes = {os.path.expanduser("~")}
    with suppress(KeyError):  # no passwd entry (some containers)
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    protected = {"/"}
    for home in homes:
        if not home.startswith("/"):
            continue
        path = os.path.normpath("/" + home.lstrip("/"))
        while path != "/":
            protected.add(path)
            path = os.path.dirname(path)
    return protected


def is_within(path: str, root: str) -> bool:
    """True when normalised ``path`` is ``root`` or below it (component-wise, not prefix)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_target(
    directory: PathArg,
    *,
    allowed_roots: Sequence[PathArg],
    allow_mount_roots: bool = False,
    protected: Sequence[PathArg] = (),
) -> Target:
    """Check ``directory`` against the safety rules and open it.

    Raises :class:`UnsafePathError` when the directory is ``/``, the home directory (or an
    ancestor of it), outside every allowed root, reached through a symlink, a mount root
    (unless ``allow_mount_roots``), or one of the ``protected`` directories or inside one;
    :class:`ValidationError` when it does not exist or is not a directory. A protected
    directory below ``directory`` goes into the target's ``skip``: the walk never enters it.
    """
    path = normalise_path(directory)
    roots = _normalise_roots(allowed_roots)
    if path in protected_directories():
        raise UnsafePathError(f"refusing to clean {display(path)!r}: a protected directory")
    # Compared by their real paths: the target's own path has no symlink on it (opening
    # refuses them), a protected one may, or '..' (a data_dir of "../data" is fine).
    guarded = [os.path.realpath(os.fsdecode(os.fspath(p))) for p in protected]
    for guard in guarded:
        if is_within(path, guard):
            raise UnsafePathError(
                f"refusing to clean {display(path)!r}: it is or lies inside "
                f"{display(guard)!r}, the scheduler's own data"
            )
    if not any(is_within(path, root) for root in roots):
        raise UnsafePathError(
            f"{display(path)!r} is outside the allowed roots {[display(r) for r in roots]}"
        )
    fd, st, parent_st = _open_nofollow(path)
    try:
        if not allow_mount_roots and _is_mount_root(path, st, parent_st):
            raise UnsafePathError(
                f"{display(path)!r} is a mount root; pass allow_mount_roots=True to clean it"
            )
    except BaseException:
        os.close(fd)
        raise
    return Target(path=path, fd=fd, dev=st.st_dev, ino=st.st_ino, skip=_identities(guarded))


def _identities(paths: Sequence[str]) -> frozenset[tuple[int, int]]:
    """``(st_dev, st_ino)`` of each existing directory in ``paths``."""
    found: set[tuple[int, int]] = set()
    for path in paths:
        with suppress(OSError):
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def _normalise_roots(allowed_roots: Sequence[PathArg]) -> list[str]:
    if isinstance(allowed_roots, str | bytes) or not isinstance(allowed_roots, Iterable):
        raise ValidationError("allowed_roots must be a sequence of absolute paths")
    roots: list[str] = []
    for root in allowed_roots:
        text = os.fsdecode(os.fspath(root))
        if not text.startswith("/"):
            raise ValidationError(f"allowed root {display(text)!r} is not absolute")
        roots.append(normalise_path(text, what="allowed root"))
    if not roots:
        raise UnsafePathError(
            "no allowed roots are configured, so nothing may be cleaned: list the "
            "directories cleanups may touch in the setting cleanup_allowed_roots "
            "(CHRONOLOG_CLEANUP_ALLOWED_ROOTS=/var/app/logs,/var/app/tmp)"
        )
    return roots


def _open_nofollow(path: str) -> tuple[int, os.stat_result, os.stat_result]:
    """Open ``path`` component by component; return its fd, its stat and its parent's."""
    fd = os.open("/", DIR_FLAGS)
    st = os.fstat(fd)
    parent_st = st
    walked = ""
    try:
        for component in filter(None, path.split("/")):
            walked += "/" + component
            try:
                child = os.open(component, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _open_error(exc, component, fd, walked, path) from None
            os.close(fd)
            fd = child
            parent_st, st = st, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd, st, parent_st


def _open_error(exc: OSError, component: str, parent_fd: int, walked: str, path: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            is_link = stat.S_ISLNK(os.lstat(component, dir_fd=parent_fd).st_mode)
        except OSError:
            is_link = False
        if is_link or exc.errno == errno.ELOOP:
            return UnsafePathError(
                f"{display(walked)!r} on the way to {display(path)!r} is a symbolic link; "
                "register the real path"
            )
        return ValidationError(f"{display(walked)!r} is not a directory")
    if exc.errno == errno.ENOENT:
        return ValidationError(f"{display(walked)!r} does not exist")
    return ValidationError(f"cannot open {display(walked)!r}: {exc.strerror}")


def _is_mount_root(path: str, st: os.stat_result, parent_st: os.stat_result) -> bool:
    # A different device than the parent is a mount of another file system; a bind mount
    # of the same file system only shows up in mountinfo.
    if st.st_dev != parent_st.st_dev or st.st_ino == parent_st.st_ino:
        return True
    return path in _mount_points()


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            data = handle.read()
    except OSError:  # no /proc: the st_dev check above is all we have
        return set()
    points: set[str] = set()
    for line in data.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            points.add(os.fsdecode(raw))
    return points


__all__ = [
    "DIR_FLAGS",
    "PathArg",
    "Target",
    "is_within",
    "normalise_path",
    "open_target",
    "protected_directories",
]
