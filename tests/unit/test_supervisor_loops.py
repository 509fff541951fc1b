"""The supervisor's heartbeat and housekeeping loops survive any exception (issue 11, item 5)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

from kirby.errors import LeaseError
from kirby.supervisor.service import Supervisor


def test_a_loop_fed_an_unexpected_exception_logs_its_traceback_and_goes_on(caplog):
    calls = []
    stop = threading.Event()

    def step():
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("an unexpected bug")
        if len(calls) == 2:
            raise LeaseError("Redis is away")
        if len(calls) == 4:
            stop.set()

    with caplog.at_level(logging.INFO):
        Supervisor._loop(SimpleNamespace(window=0.02), "housekeeping", step, stop)
    assert len(calls) == 4, "the loop stopped after an exception"
    assert "housekeeping failed; going on" in caplog.text
    assert "RuntimeError: an unexpected bug" in caplog.text  # the traceback is logged
    assert "housekeeping: Redis is away" in caplog.text


def test_one_failing_renewal_does_not_keep_the_others_from_running(caplog):
    renewed = []

    def failing():
        raise LeaseError("store unreachable")

    failing.__name__ = "_heartbeat"
    supervisor = SimpleNamespace(
        _heartbeat=failing,
        runner=SimpleNamespace(renew_overlaps=lambda: renewed.append("overlaps")),
        arbiter=SimpleNamespace(renew=lambda: renewed.append("daemons")),
        watch=SimpleNamespace(check=lambda: renewed.append("generation")),
    )
    Supervisor._beat(supervisor)
    assert renewed == ["overlaps", "daemons", "generation"]
    assert "store unreachable" in caplog.text
