"""Triggers: when a task fires. Pure code: no threads, no I/O, no clock reads.

A trigger spec (:class:`DateTrigger`, :class:`IntervalTrigger`, :class:`CronTrigger`) is
data stored in the task's events; :func:`next_fire` turns it into the next :class:`Fire`
after a given instant. Every instant is aware UTC; wall-clock rules (cron fields, day and
month intervals, DST and month-end policies) apply in the spec's IANA ``timezone``.
"""

from chronolog.triggers.engine import next_fire, preview, rule_applications
from chronolog.triggers.fire import Fire
from chronolog.triggers.spec import (
    AmbiguousPolicy,
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    IntervalUnit,
    MonthEndPolicy,
    NonexistentPolicy,
    TriggerSpec,
)
from chronolog.triggers.validation import validate
from chronolog.triggers.zones import local_zone_name, machine_zone

__all__ = [
    "AmbiguousPolicy",
    "CronTrigger",
    "DateTrigger",
    "Fire",
    "IntervalTrigger",
    "IntervalUnit",
    "MonthEndPolicy",
    "NonexistentPolicy",
    "TriggerSpec",
    "local_zone_name",
    "machine_zone",
    "next_fire",
    "preview",
    "rule_applications",
    "validate",
]
