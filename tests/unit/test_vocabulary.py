"""The shared vocabulary: run ids round-trip through one parser; the layering holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kirby.clock import FixedClock
from kirby.run_ids import (
    DAEMON,
    MANUAL,
    SLOT,
    attempt_run_id,
    daemon_run_id,
    manual_run_id,
    parse_run_id,
    slot_run_id,
)
from kirby.vocabulary import name_problem

WHEN = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda: slot_run_id("backup", "prod", WHEN), SLOT),
        (lambda: manual_run_id("backup", "prod"), MANUAL),
        (lambda: daemon_run_id("feed", "prod-eu", WHEN), DAEMON),
    ],
)
@pytest.mark.parametrize("attempt", [1, 2, 17])
def test_every_run_id_form_round_trips(make, kind, attempt):
    slot = make()
    run_id = attempt_run_id(slot, attempt)
    parsed = parse_run_id(run_id)
    assert (parsed.kind, parsed.attempt, parsed.slot_id, str(parsed)) == (kind, attempt, slot, run_id)
    if kind != MANUAL:
        assert parsed.instant == WHEN


def test_slot_ids_are_utc_instants_whatever_the_zone():
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert slot_run_id("j", "e", paris) == slot_run_id("j", "e", WHEN) == "j:e:20261025T013000Z"


@pytest.mark.parametrize("text", ["", "job", "a:b", "a:b:c", "a:b:20261025T013000Z#0", "a:b:c:20261025T013000Z", 5])
def test_parse_refuses_what_is_not_a_run_id(text):
    with pytest.raises(ValueError, match="is not a Kirby run id"):
        parse_run_id(text)


@pytest.mark.parametrize("name", ["a:b", "a#b", "with space", "", "-lead", None])
def test_the_name_rule_refuses_separators(name):
    assert name_problem(name, "job name") is not None


def test_the_name_rule_accepts_ordinary_names():
    assert name_problem("nightly-report_v2.eu", "job name") is None


def test_fixed_clock_moves_only_when_told():
    clock = FixedClock(WHEN)
    before = (clock.now(), clock.monotonic())
    clock.advance(1.5)
    assert (clock.now() - before[0], clock.monotonic() - before[1]) == (timedelta(seconds=1.5), 1.5)
