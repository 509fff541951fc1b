"""The schedule: the leader's parsed view (``snapshot``) and where it is fetched (``source``).

The document the web serves is built from plain SQL rows in ``kirby.schedule.document`` (with
``DatabaseScheduleSource``); it is not imported here, so the supervisor loads no ORM.
"""

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
from kirby.schedule.source import ScheduleClient, ScheduleSource, StaticScheduleSource

__all__ = [
    "ScheduleClient",
    "ScheduleEntry",
    "ScheduleRule",
    "ScheduleSnapshot",
    "ScheduleSource",
    "StaticScheduleSource",
    "SuspensionWindow",
    "entry_offer",
    "offer_for_slot",
    "parse_entry",
    "parse_schedule",
]
