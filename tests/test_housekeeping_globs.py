"""Glob translation for cleanup patterns: ``*`` stays within one path segment."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chronolog.errors import UnsafePathError, ValidationError
from chronolog.housekeeping.globs import check_glob, compile_globs, glob_to_regex


def matches(pattern: str, path: str) -> bool:
    return re.fullmatch(glob_to_regex(pattern), path, re.DOTALL) is not None


def reference_match(pattern: str, path: str) -> bool:
    """Straightforward segment-by-segment matcher: fnmatch per segment, ``**`` by search."""

    def go(pats: list[str], parts: list[str]) -> bool:
        if not pats:
            return not parts
        head, rest = pats[0], pats[1:]
        if head == "**":
            if not rest:
                return len(parts) >= 1
            return any(go(rest, parts[k:]) for k in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and go(rest, parts[1:])

    return go(pattern.split("/"), path.split("/"))


segment_chars = st.sampled_from(list("ab.-!"))
name = st.text(segment_chars, min_size=1, max_size=5).filter(lambda s: s not in (".", ".."))
glob_atom = st.one_of(
    st.sampled_from(["*", "?", "[ab]", "[!a]", "[a-b]", "[.]", "[!.-]", "a", "b", ".", "-"]),
)
glob_segment = st.lists(glob_atom, min_size=1, max_size=4).map("".join)


class TestExamples:
    @pytest.mark.parametrize(
        ("pattern", "path", "expected"),
        [
            ("*.log", "a.log", True),
            ("*.log", "sub/a.log", False),
            ("*", ".hidden", True),
            ("*", "a/b", False),
            ("?", "/", False),
            ("**/*.log", "a.log", True),
            ("**/*.log", "x/y/a.log", True),
            ("**/*.log", "x/a.txt", False),
            ("a/**", "a", False),
            ("a/**", "a/b", True),
            ("a/**", "a/b/c", True),
            ("a/**/b", "a/b", True),
            ("a/**/b", "a/x/y/b", True),
            ("a/**/b", "ab", False),
            ("**", "x/y/z", True),
            ("a**b", "a/b", False),
            ("a**b", "axxb", True),
            ("\\*.log", "*.log", True),
            ("\\*.log", "x.log", False),
            ("[", "[", True),
            ("[z-a]", "z", False),
            ("[!]]", "a", True),
            ("[!]]", "]", False),
            ("[]]", "]", True),
            ("*.log", "new\nline.log", True),
            ("x[!a]y", "x/y", False),
        ],
    )
    def test_example(self, pattern: str, path: str, expected: bool) -> None:
        """Each documented rule holds on a concrete path."""
        assert matches(pattern, path) is expected

    def test_combined_excludes(self) -> None:
        """Several globs compile into one regex that matches any of them."""
        regex = compile_globs(("*.tmp", "cache/**"))
        assert regex is not None
        assert regex.fullmatch("x.tmp") and regex.fullmatch("cache/a/b")
        assert not regex.fullmatch("sub/x.tmp")
        assert compile_globs(()) is None


class TestAgainstReference:
    @given(glob_segment, name)
    def test_single_segment_agrees_with_fnmatch(self, pattern: str, path: str) -> None:
        """Within one segment the translator means exactly what fnmatch means."""
        assert matches(pattern, path) is fnmatch.fnmatchcase(path, pattern)

    @given(
        st.lists(st.one_of(glob_segment, st.just("**")), min_size=1, max_size=4),
        st.lists(name, min_size=1, max_size=4),
    )
    def test_multi_segment_agrees_with_reference(
        self, pattern_parts: list[str], path_parts: list[str]
    ) -> None:
        """Across segments, ``*`` never crosses '/' and ``**`` spans whole directories."""
        pattern, path = "/".join(pattern_parts), "/".join(path_parts)
        assert matches(pattern, path) is reference_match(pattern, path)


class TestCheck:
    @pytest.mark.parametrize("pattern", ["../x", "a/../b", "..", "/abs/*.log", "/"])
    def test_patterns_that_reach_outside_are_unsafe(self, pattern: str) -> None:
        """Absolute patterns and '..' segments raise UnsafePathError."""
        with pytest.raises(UnsafePathError):
            check_glob(pattern, recursive=True)

    @pytest.mark.parametrize("pattern", ["", "a//b", "./a", "a/", "a\0b"])
    def test_malformed_patterns_are_invalid(self, pattern: str) -> None:
        """Empty, '.' or empty segments and NUL raise ValidationError."""
        with pytest.raises(ValidationError):
            check_glob(pattern, recursive=True)

    def test_slash_needs_recursive(self) -> None:
        """A multi-segment pattern could never match a non-recursive walk."""
        with pytest.raises(ValidationError, match="recursive"):
            check_glob("sub/*.log", recursive=False)
        assert check_glob("sub/*.log", recursive=True) == "sub/*.log"

    def test_names_starting_with_dots_are_fine(self) -> None:
        """Only a whole '..' segment is refused; '..foo' is an ordinary name."""
        assert check_glob("..foo", recursive=False) == "..foo"
