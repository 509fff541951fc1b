"""The chaos audit: an every-second schedule's slots, checked against the script's own ledger and
the runs table, with the figures each fault test prints (and the closing note quotes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kirby.cron import slots_between
from kirby.models import RunState
from kirby.run_ids import parse_run_id, slot_run_id
from tests.helpers import wait_for

EVERY_SECOND = "* * * * * *"
UNSETTLED = (RunState.OFFERED, RunState.CLAIMED, RunState.RUNNING)


def ledger(path: Path) -> list[tuple[str, float]]:
    """(run id, wall time it ran) per execution, as the script itself wrote them."""
    if not path.exists():
        return []
    return [(line.split()[0], float(line.split()[2])) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Figures:
    fault: str
    expected: int
    ran: int
    late: int  # ran more than 2 s after its slot (within its grace)
    skipped: int  # recorded skipped, with the reason
    duplicates: int
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"[chaos] {self.fault}: slots expected {self.expected}, ran {self.ran} (late {self.late}), "
            f"skipped with reason {self.skipped}, duplicates {self.duplicates}; reasons: {list(self.reasons)[:3]}"
        )


def audit(
    cluster, job: str, path: Path, start: datetime, end: datetime, fault: str, grace: float, settle: float = 120
) -> Figures:
    """Every slot of ``job`` in (start, end] ran exactly once (within ``grace`` of its instant) or is
    recorded skipped with a reason; no run is left offered, claimed or running (after ``settle``
    seconds); none ran twice."""
    expected = [slot_run_id(job, "e2e", slot) for slot in slots_between(EVERY_SECOND, "UTC", start, end)]

    def unsettled() -> list:
        ran = {run_id for run_id, _ in ledger(path)}
        runs = {run.id: run for run in cluster.runs(job)}
        left = []
        for run_id in expected:
            run = runs.get(run_id)
            if run is None or run.state in UNSETTLED:
                left.append((run_id, run_id in ran, run.state.value if run else None))
            elif run.state == RunState.SKIPPED and not run.error:
                left.append((run_id, run_id in ran, "skipped without a reason"))
            elif run.state != RunState.SKIPPED and not (run_id in ran and run.state == RunState.SUCCEEDED):
                left.append((run_id, run_id in ran, run.state.value))
        return left

    try:
        wait_for(lambda: not unsettled(), settle, "")
    except AssertionError:
        left = unsettled()
        raise AssertionError(
            f"{fault}: {len(left)} of {len(expected)} slots neither ran once nor were recorded skipped with a "
            f"reason (id, in ledger, state): {left[:10]}; logs in {cluster.workdir}"
        ) from None
    executions = ledger(path)
    counts = Counter(run_id for run_id, _ in executions)
    wanted = set(expected)
    twice = sorted(run_id for run_id, count in counts.items() if count > 1)
    ran_at = {run_id: at for run_id, at in executions if run_id in wanted}
    lateness = {
        run_id: at - parse_run_id(run_id).instant.replace(tzinfo=timezone.utc).timestamp()
        for run_id, at in ran_at.items()
    }
    too_late = {run_id: late for run_id, late in lateness.items() if late > grace + 5}
    runs = {run.id: run for run in cluster.runs(job) if run.id in wanted}
    skipped = [run for run in runs.values() if run.state == RunState.SKIPPED]
    ran_and_skipped = [run.id for run in skipped if run.id in ran_at]
    figures = Figures(
        fault,
        len(expected),
        len(ran_at),
        sum(1 for late in lateness.values() if late > 2),
        len(skipped),
        len(twice),
        tuple(sorted({(run.error or "").split(":")[0] for run in skipped})),
    )
    print(figures)
    assert not twice, f"{fault}: ran more than once: {twice}"
    assert not ran_and_skipped, f"{fault}: ran although recorded skipped: {ran_and_skipped}"
    assert not too_late, f"{fault}: ran later than their grace: {too_late}"
    assert figures.ran + figures.skipped == figures.expected
    return figures
