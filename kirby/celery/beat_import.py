"""``kirby celery import-beat``: a Celery app's ``beat_schedule`` translated into Kirby jobs.

Contract: :func:`translate` turns a ``beat_schedule`` mapping (entry name -> ``{"task", "schedule",
"args", "kwargs", "options", "relative"}``) into one :class:`Translated` or :class:`Refused` per
entry, without a clock, a database or a broker. The user's app is imported only by :func:`load_app`
(reading ``beat_schedule`` needs it; sending a task never does). :func:`jobs_document` writes the
translated entries in the import format (``celery_task`` + ``environments``), which
``kirby.demo.beat`` hands to ``kirby apply``'s machinery, all or nothing.

Schedules, each an exact equivalent or refused with the reason:

- ``crontab``: celery's parsed field sets (so its own parsing of names, ranges, wrap-arounds and
  steps decides) become a 5-field cron in the app's time zone (:func:`app_zone`). Celery runs a
  crontab on a day matching day_of_month AND day_of_week; cron fires on either when both are
  restricted, so that combination is translated only where ``n#k`` is exact (whole weeks of the
  month: ``day_of_month="1-7", day_of_week="mon"`` is ``1#1``) and refused otherwise. A crontab with
  its own ``nowfun`` (a clock Kirby cannot read) is refused.
- ``schedule``/``timedelta``/a number of seconds: the cron with the same period, on the clock, in
  UTC (a duration knows no DST): 30 s -> ``* * * * * */30``, 5 min -> ``*/5 * * * *``, 2 h ->
  ``0 */2 * * *``, 1 day -> ``0 0 * * *``, 7 days -> ``0 0 * * 0``. A period that does not divide
  the next unit (7 s, 90 min, 5 h, 2 days) has no exact cron (cron restarts every minute, hour,
  day) and is refused, naming the nearest periods that do. Beat counted intervals from its own
  start; Kirby's slots are on the clock (``:00, :05, ...``).
- ``solar`` and anything else: refused (cron has no sunrise).

Options carried: ``queue``, ``routing_key``, ``priority``; ``expires`` (seconds) becomes the
schedule's ``misfire_grace_seconds`` (Kirby sends ``expires`` = the end of the misfire grace).
Other options (``exchange``, ``countdown``, ...) are refused with the reason: silently dropping one
would change what the task does. ``args``/``kwargs`` must survive JSON unchanged.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kirby import cron
from kirby.errors import CronError, KirbyError
from kirby.vocabulary import MIN_MISFIRE_GRACE_SECONDS, name_problem

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative")
CARRIED_OPTIONS = ("queue", "routing_key", "priority", "expires")
_WEEK_BLOCKS = {1: range(1, 8), 2: range(8, 15), 3: range(15, 22), 4: range(22, 29), 5: range(29, 32)}
_DAY = 86_400


class BeatImportError(KirbyError):
    """The app or its beat_schedule cannot be imported as a whole (one line naming it and the fix)."""


class Untranslatable(ValueError):
    """A schedule has no exact cron; the message says why (and what would be exact)."""


@dataclass(frozen=True)
class Translated:
    entry: str  # the beat_schedule key
    job: str  # the Kirby job name
    task: str
    cron: str
    timezone: str
    source: str  # what beat had, in words: "crontab(minute='*/15') in Europe/Paris"
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # queue, routing_key, priority (None when absent)
    misfire_grace_seconds: int | None = None

    def celery_task(self) -> dict:
        return {"name": self.task, "args": self.args, "kwargs": self.kwargs} | {
            key: self.options.get(key) for key in ("queue", "routing_key", "priority")
        }

    def scheduled_param(self) -> dict:
        param = {"cron": self.cron, "timezone": self.timezone}
        if self.misfire_grace_seconds is not None:
            param["misfire_grace_seconds"] = self.misfire_grace_seconds
        return param

    def __str__(self) -> str:
        return (
            f"{self.entry!r} -> job {self.job}: {self.task} at {self.cron!r} ({self.timezone}); beat had {self.source}"
        )


@dataclass(frozen=True)
class Refused:
    entry: str
    reason: str

    def __str__(self) -> str:
        return f"{self.entry!r} refused: {self.reason}"


# --- the app ---------------------------------------------------------------------------------


def load_app(spec: str, cwd: Path | None = None):
    """The Celery app named ``MODULE:APP`` (imported from ``cwd`` too, as ``celery -A`` does)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise BeatImportError(f"{spec!r}: give the app as MODULE:APP, e.g. proj.celery:app")
    try:
        from celery import Celery
    except ImportError:
        raise BeatImportError(
            "importing a beat schedule needs Celery next to Kirby: pip install 'kirby[celery]'"
        ) from None
    folder = str(cwd or Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any error it raises is reported in one line
        raise BeatImportError(
            f"{spec}: importing {module_name} failed: {type(exc).__name__}: {exc} "
            "(run from the folder that holds it, or set PYTHONPATH)"
        ) from None
    app = module
    for part in attribute.split("."):
        if not hasattr(app, part):
            raise BeatImportError(f"{spec}: {module_name} has no attribute {attribute!r}; name the Celery app object")
        app = getattr(app, part)

    if not isinstance(app, Celery):
        raise BeatImportError(f"{spec}: is a {type(app).__name__}, not a Celery application")
    return app


def app_zone(timezone_setting: object, enable_utc: bool) -> str:
    """The IANA zone celery evaluates crontabs in (``app.timezone``'s rule), or BeatImportError."""
    if not timezone_setting:
        if enable_utc:
            return "UTC"
        raise BeatImportError(
            "the app sets no timezone and enable_utc is False, so beat used this machine's local time; "
            'set app.conf.timezone to its IANA name (e.g. "Europe/Paris") and import again'
        )
    name = str(getattr(timezone_setting, "key", timezone_setting))
    try:
        cron.zone(name)
    except CronError:
        raise BeatImportError(
            f'the app\'s timezone {name!r} is not an IANA time zone; set app.conf.timezone to e.g. "Europe/Paris"'
        ) from None
    return name


def app_schedule(app) -> tuple[dict, str]:
    """(``beat_schedule``, the zone of its crontabs) of a loaded app."""
    schedule = app.conf.beat_schedule or {}
    if not isinstance(schedule, dict):
        raise BeatImportError(f"the app's beat_schedule is a {type(schedule).__name__}; expected a dict")
    return schedule, app_zone(app.conf.timezone, app.conf.enable_utc)


# --- schedules -> cron (pure) ----------------------------------------------------------------


def _field(values: set[int], low: int, high: int) -> str:
    """A cron field for the set ``values`` of [low, high]: ``*``, ``*/n``, ``a-b/n`` or a list of ranges."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    gaps = {b - a for a, b in zip(ordered, ordered[1:])}
    if len(ordered) >= 3 and len(gaps) == 1 and (step := gaps.pop()) > 1:
        if ordered[0] == low and ordered[-1] + step > high:
            return f"*/{step}"
        return f"{ordered[0]}-{ordered[-1]}/{step}"
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def crontab_cron(minute: set, hour: set, day_of_week: set, day_of_month: set, month_of_year: set) -> str:
    """The 5-field cron firing exactly when celery's crontab of these expanded sets does."""
    days, weekdays = set(day_of_month), set(day_of_week)
    every_day, every_weekday = days == set(range(1, 32)), weekdays == set(range(7))
    if every_day or every_weekday:
        day_field, weekday_field = _field(days, 1, 31), _field(weekdays, 0, 6)
    else:
        blocks = [k for k, block in _WEEK_BLOCKS.items() if set(block) <= days]
        if set().union(*(_WEEK_BLOCKS[k] for k in blocks)) != days:
            raise Untranslatable(
                f"day_of_month {_field(days, 1, 31)!r} and day_of_week {_field(weekdays, 0, 6)!r} are both "
                "restricted: celery runs on days matching both, cron on days matching either; only whole weeks "
                "of the month (1-7, 8-14, 15-21, 22-28, 29-31: the first.. fifth weekday) have an exact cron"
            )
        day_field = "*"
        weekday_field = ",".join(f"{day}#{k}" for day in sorted(weekdays) for k in blocks)
    fields = (_field(set(minute), 0, 59), _field(set(hour), 0, 23), day_field, _field(set(month_of_year), 1, 12))
    return cron.validate(" ".join((*fields, weekday_field)))


def _periods(unit: int, count: int) -> list[int]:
    return [unit * n for n in range(1, count + 1) if count % n == 0]


_EXACT = sorted({*_periods(1, 60), *_periods(60, 60), *_periods(3600, 24), _DAY, 7 * _DAY})


def _words(seconds: int) -> str:
    for unit, name in ((7 * _DAY, "week"), (_DAY, "day"), (3600, "h"), (60, "min")):
        if seconds >= unit and seconds % unit == 0:
            count = seconds // unit
            return f"{count} {name}{'s' if count > 1 and name in ('day', 'week') else ''}"
    return f"{seconds} s"


def interval_cron(seconds: float) -> str:
    """The cron (in UTC) whose slots are ``seconds`` apart, on the clock; Untranslatable if none is."""
    whole = round(seconds)
    if seconds <= 0 or abs(seconds - whole) > 1e-9:
        raise Untranslatable(f"an interval of {seconds:g} s: cron counts whole seconds; give a positive whole number")
    if whole < 60 and 60 % whole == 0:
        return "* * * * * *" if whole == 1 else f"* * * * * */{whole}"
    if whole % 60 == 0 and whole < 3600 and 60 % (whole // 60) == 0:
        return "* * * * *" if whole == 60 else f"*/{whole // 60} * * * *"
    if whole % 3600 == 0 and whole < _DAY and 24 % (whole // 3600) == 0:
        return "0 * * * *" if whole == 3600 else f"0 */{whole // 3600} * * *"
    if whole == _DAY:
        return "0 0 * * *"
    if whole == 7 * _DAY:
        return "0 0 * * 0"
    shorter = max((p for p in _EXACT if p < whole), default=None)
    longer = min((p for p in _EXACT if p > whole), default=None)
    nearest = " or ".join(_words(p) for p in (shorter, longer) if p is not None)
    raise Untranslatable(
        f"every {_words(whole)} has no exact cron: cron restarts every minute, hour and day, so a period must "
        f"divide the next unit (or be 1 day or 1 week); the nearest exact periods are {nearest}"
    )


def schedule_cron(schedule: Any, zone: str) -> tuple[str, str, str]:
    """(cron, time zone, what beat had in words) of one entry's ``schedule``; Untranslatable if none."""
    from celery.schedules import crontab, solar
    from celery.schedules import schedule as interval

    if isinstance(schedule, bool):
        raise Untranslatable(f"the schedule {schedule!r} is not a crontab, timedelta or number of seconds")
    if isinstance(schedule, (int, float)):
        return interval_cron(schedule), "UTC", f"an interval of {schedule:g} s"
    if isinstance(schedule, timedelta):
        return (
            interval_cron(schedule.total_seconds()),
            "UTC",
            f"an interval of {_words(round(schedule.total_seconds()))}",
        )
    if isinstance(schedule, crontab):
        if schedule.nowfun is not None:
            raise Untranslatable(
                "the crontab has its own nowfun, a clock Kirby cannot read; remove it and set app.conf.timezone"
            )
        expression = crontab_cron(
            schedule.minute, schedule.hour, schedule.day_of_week, schedule.day_of_month, schedule.month_of_year
        )
        fields = (schedule._orig_minute, schedule._orig_hour, schedule._orig_day_of_month)
        fields += (schedule._orig_month_of_year, schedule._orig_day_of_week)
        return expression, zone, f"crontab '{' '.join(map(str, fields))}' (m h dom mon dow) in {zone}"
    if isinstance(schedule, solar):
        raise Untranslatable(
            f"solar({schedule.event!r}) follows the sun at ({schedule.lat}, {schedule.lon}): cron has no sunrise; "
            "keep it on beat, or replace it with a crontab at a fixed time"
        )
    if type(schedule) is interval:  # a subclass (e.g. django-celery-beat's) may mean something else
        return interval_cron(schedule.seconds), "UTC", f"an interval of {_words(round(schedule.seconds))}"
    raise Untranslatable(f"a {type(schedule).__name__} schedule: Kirby translates crontab, timedelta and numbers")


# --- entries ---------------------------------------------------------------------------------


def job_name(entry: str) -> str:
    """A Kirby job name for a beat entry name: runs of other characters become ``-``."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(entry)).strip("-._")[:128]
    return name or "beat-entry"


def _json(value: Any, what: str) -> Any:
    plain = _lists(value)
    try:
        if json.loads(json.dumps(plain)) == plain:
            return plain
    except (TypeError, ValueError):
        pass
    raise Untranslatable(f"{what} {value!r} do not survive JSON unchanged; Kirby sends args and kwargs as JSON")


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def _options(options: Any) -> tuple[dict, int | None]:
    if not isinstance(options, dict):
        raise Untranslatable(f"options {options!r} is not a dict")
    unknown = [key for key in options if key not in CARRIED_OPTIONS]
    if unknown:
        raise Untranslatable(
            f"option(s) {', '.join(map(repr, unknown))} would be dropped (Kirby carries queue, routing_key, "
            "priority and expires); set them on the task (@app.task(...)) or in task_routes, then import again"
        )
    carried = {key: options.get(key) for key in ("queue", "routing_key", "priority")}
    for key in ("queue", "routing_key"):
        if carried[key] is not None and not isinstance(carried[key], str):
            raise Untranslatable(f"option {key} {carried[key]!r} is not a string")
    priority = carried["priority"]
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        raise Untranslatable(f"option priority {priority!r} is not a whole number from 0 to 255")
    expires = options.get("expires")
    if expires is None:
        return carried, None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise Untranslatable(
            f"option expires {expires!r}: only a number of seconds has a meaning for every slot (it becomes the "
            "misfire grace)"
        )
    if expires < MIN_MISFIRE_GRACE_SECONDS:
        raise Untranslatable(
            f"option expires {expires:g} s is below Kirby's smallest misfire grace ({MIN_MISFIRE_GRACE_SECONDS} s), "
            "which Kirby sends as expires; raise it or remove it"
        )
    return carried, int(expires)


def translate_entry(entry: str, body: Any, zone: str) -> Translated | Refused:
    """One ``beat_schedule`` entry, with ``zone`` the app's crontab zone (:func:`app_zone`)."""
    try:
        if not isinstance(body, dict):
            raise Untranslatable(f"the entry is a {type(body).__name__}; expected a dict with task and schedule")
        unknown = [key for key in body if key not in ENTRY_KEYS]
        if unknown:
            raise Untranslatable(f"unknown key(s) {', '.join(map(repr, unknown))}; beat reads {', '.join(ENTRY_KEYS)}")
        task = body.get("task")
        if not isinstance(task, str) or not task.strip():
            raise Untranslatable("no task name (the entry's 'task', e.g. 'proj.tasks.add')")
        if "schedule" not in body:
            raise Untranslatable("no schedule")
        expression, timezone, source = schedule_cron(body["schedule"], zone)
        args = _json(body.get("args") or [], "args")
        kwargs = _json(body.get("kwargs") or {}, "kwargs")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise Untranslatable("args must be a list or tuple and kwargs a dict")
        options, grace = _options(body.get("options") or {})
    except Untranslatable as exc:
        return Refused(entry, str(exc))
    return Translated(entry, job_name(entry), task, expression, timezone, source, args, kwargs, options, grace)


def translate(beat_schedule: dict, zone: str) -> list[Translated | Refused]:
    """Every entry of ``beat_schedule``, in order; two entries that map to one job name are refused."""
    results = [translate_entry(entry, body, zone) for entry, body in beat_schedule.items()]
    seen: dict[str, str] = {}
    checked: list[Translated | Refused] = []
    for result in results:
        if isinstance(result, Translated):
            problem = name_problem(result.job, "job name")
            if problem:
                result = Refused(result.entry, problem)
            elif result.job in seen:
                result = Refused(result.entry, f"its job name {result.job!r} is taken by entry {seen[result.job]!r}")
            else:
                seen[result.job] = result.entry
        checked.append(result)
    return checked


def jobs_document(translated: list[Translated], environments: dict[str, list[str]]) -> dict:
    """``JOBS`` in the import format; ``environments`` maps each job to the environments it runs in."""
    return {
        item.job: {
            "type": "scheduled",
            "description": f"celery beat entry {item.entry!r} ({item.source})",
            "celery_task": item.celery_task(),
            "environments": environments[item.job],
            "scheduled_param": item.scheduled_param(),
        }
        for item in translated
    }
