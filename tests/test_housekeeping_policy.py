"""The pure retention policies: age, count and total size, alone and combined."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chronolog.housekeeping.model import CleanupRules, RemovalReason
from chronolog.housekeeping.policy import FileFact, retention_ns, select

NOW_NS = 2_000_000_000 * 10**9
DAY_NS = 86_400 * 10**9


def fact(index: int, ts_ns: int, size: int = 0) -> FileFact:
    return FileFact(f"f{index:04d}", 0, f"f{index:04d}", 1, index, size, ts_ns, ts_ns, ts_ns)


def model(
    facts: list[FileFact],
    retention_s: int | None,
    max_files: int | None,
    max_bytes: int | None,
) -> list[tuple[RemovalReason, ...]]:
    """The policy as its documentation states it, computed per file."""
    order = sorted(range(len(facts)), key=lambda i: (-facts[i].ts_ns, facts[i].rel))
    rank = {i: r for r, i in enumerate(order)}
    out: list[tuple[RemovalReason, ...]] = []
    for i, f in enumerate(facts):
        reasons: list[RemovalReason] = []
        if retention_s is not None and NOW_NS - f.ts_ns > retention_s * 10**9:
            reasons.append("age")
        if max_files is not None and rank[i] >= max_files:
            reasons.append("count")
        newer_or_same = sum(facts[j].size for j in order[: rank[i] + 1])
        if max_bytes is not None and newer_or_same > max_bytes:
            reasons.append("size")
        out.append(tuple(reasons))
    return out


timestamps = st.integers(NOW_NS - 40 * DAY_NS, NOW_NS + 2 * DAY_NS).map(
    lambda t: t // 10**9 * 10**9
)
fact_lists = st.lists(st.tuples(timestamps, st.integers(0, 1000)), max_size=25).map(
    lambda items: [fact(i, ts, size) for i, (ts, size) in enumerate(items)]
)
limits = st.tuples(
    st.none() | st.integers(0, 40 * 86_400),
    st.none() | st.integers(0, 30),
    st.none() | st.integers(0, 15_000),
)


def rules_for(
    retention_s: int | None, max_files: int | None, max_bytes: int | None
) -> CleanupRules:
    return CleanupRules(
        retention_days=None if retention_s is None else retention_s / 86_400,
        max_files=max_files,
        max_total_bytes=max_bytes,
    )


class TestAgainstModel:
    @given(fact_lists, limits)
    def test_selection_equals_model(
        self, facts: list[FileFact], limit: tuple[int | None, int | None, int | None]
    ) -> None:
        """Every combination of limits selects exactly what the per-file model says."""
        assert select(facts, rules_for(*limit), NOW_NS) == model(facts, *limit)

    @given(fact_lists, limits, st.data())
    def test_a_subset_never_selects_more(
        self,
        facts: list[FileFact],
        limit: tuple[int | None, int | None, int | None],
        data: st.DataObject,
    ) -> None:
        """Selecting from part of the files (a budgeted run) removes nothing the full set keeps."""
        keep = data.draw(st.lists(st.booleans(), min_size=len(facts), max_size=len(facts)))
        subset = [f for f, k in zip(facts, keep, strict=True) if k]
        rules = rules_for(*limit)
        full = {f.rel for f, why in zip(facts, select(facts, rules, NOW_NS), strict=True) if why}
        part = {f.rel for f, why in zip(subset, select(subset, rules, NOW_NS), strict=True) if why}
        assert part <= full


class TestExamples:
    def test_future_timestamps_are_never_old(self) -> None:
        """A file dated after now is kept by the age policy even with zero retention."""
        facts = [fact(0, NOW_NS + DAY_NS), fact(1, NOW_NS), fact(2, NOW_NS - 1)]
        assert select(facts, CleanupRules(retention_days=0), NOW_NS) == [(), (), ("age",)]

    def test_age_is_strictly_older_than_retention(self) -> None:
        """A file exactly retention_days old is kept; one nanosecond older is removed."""
        facts = [fact(0, NOW_NS - DAY_NS), fact(1, NOW_NS - DAY_NS - 1)]
        assert select(facts, CleanupRules(retention_days=1), NOW_NS) == [(), ("age",)]

    def test_count_ties_keep_the_path_that_sorts_first(self) -> None:
        """With equal timestamps, walk order decides which files count as newer."""
        facts = [fact(i, NOW_NS) for i in range(3)]
        assert select(facts, CleanupRules(max_files=1), NOW_NS) == [(), ("count",), ("count",)]

    def test_size_removes_oldest_until_the_total_fits(self) -> None:
        """A total exactly at the cap is kept; the file that exceeds it and older ones go."""
        facts = [fact(0, NOW_NS - 3, 10), fact(1, NOW_NS - 1, 60), fact(2, NOW_NS - 2, 40)]
        assert select(facts, CleanupRules(max_total_bytes=100), NOW_NS) == [("size",), (), ()]

    def test_reasons_are_all_listed(self) -> None:
        """A file selected by several limits names each of them, in a fixed order."""
        facts = [fact(0, NOW_NS - 10 * DAY_NS, 500), fact(1, NOW_NS, 500)]
        rules = CleanupRules(retention_days=1, max_files=1, max_total_bytes=600)
        assert select(facts, rules, NOW_NS)[0] == ("age", "count", "size")

    @pytest.mark.parametrize(
        ("days", "ns"), [(7, 7 * DAY_NS), (0.5, DAY_NS // 2), (1 / 86_400, 10**9)]
    )
    def test_retention_is_whole_nanoseconds(self, days: float, ns: int) -> None:
        """Retention converts to exact nanoseconds for round numbers of seconds."""
        assert retention_ns(days) == ns
