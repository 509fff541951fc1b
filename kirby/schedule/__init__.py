"""The schedule: the document the web serves (``document``), the leader's parsed view
(``snapshot``) and where the leader fetches it (``source``)."""

from kirby.schedule.document import build_schedule, manual_offer, merge_config, resolve_config
from kirby.schedule.snapshot import (
    ScheduleEntry,
    ScheduleRule,
    ScheduleSnapshot,
    SuspensionWindow,
    entry_offer,
    offer_for_slot,
    parse_entry,
    parse_schedule,
)
from kirby.schedule.source import DatabaseScheduleSource, ScheduleClient, ScheduleSource, StaticScheduleSource

__all__ = [
    "DatabaseScheduleSource",
    "ScheduleClient",
    "ScheduleEntry",
    "ScheduleRule",
    "ScheduleSnapshot",
    "ScheduleSource",
    "StaticScheduleSource",
    "SuspensionWindow",
    "build_schedule",
    "entry_offer",
    "manual_offer",
    "merge_config",
    "offer_for_slot",
    "parse_entry",
    "parse_schedule",
    "resolve_config",
]
