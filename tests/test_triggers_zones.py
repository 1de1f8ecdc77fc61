"""The machine's zone name, and rule_applications() warnings at scheduling time."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chronolog.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    local_zone_name,
    localtime,
    machine_zone,
    rule_applications,
    zones,
)

JAN_2027 = datetime(2027, 1, 1, tzinfo=UTC)


class TestLocalZoneName:
    @pytest.mark.parametrize(
        ("tz", "expected"),
        [
            ("Europe/Berlin", "Europe/Berlin"),
            (":America/New_York", "America/New_York"),
            ("/usr/share/zoneinfo/Asia/Kathmandu", "Asia/Kathmandu"),
        ],
    )
    def test_tz_variable(self, monkeypatch: pytest.MonkeyPatch, tz: str, expected: str) -> None:
        """TZ wins, as a name, a ':name' or a path into a zoneinfo tree."""
        monkeypatch.setenv("TZ", tz)
        assert local_zone_name() == expected

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("America/New_York", "America/New_York"),
            # A link to Europe/Zurich: the canonical zone is named.
            ("Europe/Busingen", "Europe/Zurich"),
            ("Etc/UTC", "UTC"),
        ],
    )
    def test_a_copied_localtime_names_the_zone_with_its_bytes(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, expected: str
    ) -> None:
        """A container's /etc/localtime is often a copy of a zone file (a Kubernetes
        hostPath mount of the host's, a Dockerfile COPY), with no symlink to read and no
        /etc/timezone: the zone whose file holds the same bytes is the machine's."""
        root = next(localtime._tzdata_roots())
        copy = tmp_path / "localtime"
        copy.write_bytes((root / source).read_bytes())
        monkeypatch.delenv("TZ", raising=False)
        monkeypatch.setattr(zones, "LOCALTIME", copy)
        monkeypatch.setattr(zones, "TIMEZONE_FILE", tmp_path / "no-timezone")
        assert local_zone_name() == expected

    def test_a_copied_localtime_is_searched_once_per_version(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The search reads tzdata files: its answer is kept until the copy changes. A
        copy of no zone leaves the machine in UTC."""
        root = next(localtime._tzdata_roots())
        copy = tmp_path / "localtime"
        copy.write_bytes((root / "Asia/Kolkata").read_bytes())
        monkeypatch.delenv("TZ", raising=False)
        monkeypatch.setattr(zones, "LOCALTIME", copy)
        monkeypatch.setattr(zones, "TIMEZONE_FILE", tmp_path / "no-timezone")
        searches = 0
        real = localtime._matching_zone

        def counted(data: bytes) -> str | None:
            nonlocal searches
            searches += 1
            return real(data)

        monkeypatch.setattr(localtime, "_matching_zone", counted)
        assert [local_zone_name() for _ in range(3)] == ["Asia/Kolkata"] * 3
        assert searches == 1
        copy.unlink()
        copy.write_bytes(b"TZif not a zone")
        assert local_zone_name() == "UTC"
        assert searches == 2

    def test_localtime_symlink(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without TZ, the /etc/localtime symlink target names the zone."""
        monkeypatch.delenv("TZ", raising=False)
        monkeypatch.setattr(os, "readlink", lambda _: "../usr/share/zoneinfo/Pacific/Apia")
        assert local_zone_name() == "Pacific/Apia"

    def test_etc_timezone_then_utc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Then /etc/timezone; POSIX rule strings and unreadable files fall back to UTC."""
        monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")

        def no_link(_: str) -> str:
            raise OSError

        monkeypatch.setattr(os, "readlink", no_link)
        monkeypatch.setattr(Path, "read_text", lambda *_, **__: "Africa/Casablanca\n")
        assert local_zone_name() == "Africa/Casablanca"
        monkeypatch.setattr(Path, "read_text", lambda *_, **__: "not a zone")
        assert local_zone_name() == "UTC"

    def test_machine_zone_rereads_files_after_a_while_and_tz_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The cached answer follows a TZ change at once and a file change within the TTL."""
        monkeypatch.delenv("TZ", raising=False)
        link = ["../usr/share/zoneinfo/Pacific/Apia"]
        monkeypatch.setattr(os, "readlink", lambda _: link[0])
        clock = [1000.0]
        monkeypatch.setattr(zones.time, "monotonic", lambda: clock[0])
        monkeypatch.setattr(zones, "_machine_zone", None)
        assert machine_zone() == "Pacific/Apia"
        link[0] = "/usr/share/zoneinfo/Asia/Tokyo"
        assert machine_zone() == "Pacific/Apia"  # trusted for a while
        clock[0] += zones.MACHINE_ZONE_TTL
        assert machine_zone() == "Asia/Tokyo"
        monkeypatch.setenv("TZ", "Europe/Berlin")
        assert machine_zone() == "Europe/Berlin"  # at once

    def test_real_machine_answer_loads(self) -> None:
        """Whatever this machine says is a loadable IANA zone."""
        ZoneInfo(local_zone_name())


class TestRuleApplications:
    def test_daily_at_0230_berlin(self) -> None:
        """A year of 02:30 Berlin: one shifted spring day, one repeated autumn day."""
        spec = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin")
        found = rule_applications(spec, JAN_2027)
        assert [f.local.isoformat() for f in found] == [
            "2027-03-28T03:00:00+02:00",
            "2027-10-31T02:30:00+02:00",
        ]

    def test_quarter_hours_new_york(self) -> None:
        """*/15 New York: the merged 03:00 in March and eight fires in the November hour."""
        spec = CronTrigger(expression="*/15 * * * *", timezone="America/New_York")
        found = rule_applications(spec, JAN_2027)
        assert len(found) == 1 + 8
        assert found[0].local.isoformat() == "2027-03-14T03:00:00-04:00"
        assert all(f.local.hour == 1 and f.local.day == 7 for f in found[1:])

    def test_skip_notes_are_included(self) -> None:
        """With skip, the fire after the gap carries the note and is reported."""
        spec = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin", nonexistent="skip")
        found = rule_applications(spec, JAN_2027, months=6)
        assert [f.local.date().isoformat() for f in found] == ["2027-03-29"]
        assert "skipped" in found[0].notes[0]

    def test_month_end_clamps(self) -> None:
        """Monthly on the 31st: the five short months of a year are reported."""
        start = datetime(2027, 1, 31, 9, tzinfo=UTC)
        spec = IntervalTrigger(every=1, unit="months", start=start)
        found = rule_applications(spec, start, months=12)
        assert [f"{f.local:%m-%d}" for f in found] == ["02-28", "04-30", "06-30", "09-30", "11-30"]

    def test_elapsed_and_date_have_none(self) -> None:
        """Elapsed intervals and date triggers never meet a wall-clock rule."""
        hourly = IntervalTrigger(every=1, unit="hours", start=JAN_2027, timezone="Europe/Berlin")
        date = DateTrigger(
            run_at=datetime(2027, 3, 28, 1, 30, tzinfo=UTC), timezone="Europe/Berlin"
        )
        assert rule_applications(hourly, JAN_2027) == []
        assert rule_applications(date, JAN_2027) == []

    def test_horizon_and_max_runs(self) -> None:
        """Only the next `months` months, and only fires within max_runs."""
        spec = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin")
        assert rule_applications(spec, JAN_2027, months=2) == []
        limited = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin", max_runs=30)
        assert rule_applications(limited, JAN_2027) == []

    def test_utc_has_none(self) -> None:
        """A UTC task has nothing to warn about."""
        spec = CronTrigger(expression="*/5 * * * *")
        assert rule_applications(spec, JAN_2027, months=24) == []
