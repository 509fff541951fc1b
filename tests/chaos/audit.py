"""The chaos audit: a schedule's slots (every second, every 5 s, ...), checked against the script's
own ledger and the runs table, with the figures each fault test prints (and the closing note
quotes); and, from a script's own start and end records, that two runs of a job never overlapped."""

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


EVERY_FIVE_SECONDS = "* * * * * */5"


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ledger(path: Path) -> list[tuple[str, float]]:
    """(run id, wall time it started) per execution, as the script itself wrote them
    (kirby-example-hello and kirby-example-stint: ``<run id> <pid> <time>``)."""
    return [(words[0], float(words[2])) for words in _lines(path) if len(words) == 3]


def spans(path: Path) -> dict[int, tuple[str, float, float | None]]:
    """pid -> (run id, start, end or None while it runs), from kirby-example-stint's ledger."""
    found: dict[int, tuple[str, float, float | None]] = {}
    for words in _lines(path):
        pid = int(words[1])
        if len(words) == 3:
            found[pid] = (words[0], float(words[2]), None)
        elif pid in found:
            found[pid] = (found[pid][0], found[pid][1], float(words[2]))
    return found


def assert_one_at_a_time(path: Path, job: str) -> int:
    """No two executions in ``path`` overlapped (from their own start and end records; one still
    running counts as running until now). Returns how many there were."""
    executions = sorted(spans(path).values(), key=lambda span: span[1])
    for (run_a, _, end_a), (run_b, start_b, _) in zip(executions, executions[1:]):
        assert end_a is not None and end_a <= start_b, (
            f"{job}: run {run_b} started at {start_b:.3f} while run {run_a} ran (ended {end_a})"
        )
    return len(executions)


@dataclass(frozen=True)
class Figures:
    fault: str
    expected: int
    ran: int
    late: int  # ran more than 2 s after its slot (within its grace)
    skipped: int  # recorded skipped, with the reason
    duplicates: int
    reasons: tuple[str, ...]
    lost: int = 0  # started, then their supervisor was SIGKILLed: recorded lost (they ran at most once)

    def __str__(self) -> str:
        return (
            f"[chaos] {self.fault}: slots expected {self.expected}, ran {self.ran} (late {self.late}), "
            f"skipped with reason {self.skipped}, lost {self.lost}, duplicates {self.duplicates}; "
            f"reasons: {list(self.reasons)[:3]}"
        )


def audit(
    cluster,
    job: str,
    path: Path,
    start: datetime,
    end: datetime,
    fault: str,
    grace: float,
    settle: float = 120,
    lost_ok: bool = False,
    cron: str = EVERY_SECOND,
) -> Figures:
    """Every slot of ``job`` in (start, end] ran exactly once (within ``grace`` of its instant) or is
    recorded skipped with a reason (or, with ``lost_ok``, where a supervisor is SIGKILLed, lost with
    a reason); no run is left offered, claimed or running (after ``settle`` seconds); none ran twice."""
    expected = [slot_run_id(job, "e2e", slot) for slot in slots_between(cron, "UTC", start, end)]

    def unsettled() -> list:
        ran = {run_id for run_id, _ in ledger(path)}
        runs = {run.id: run for run in cluster.runs(job)}
        left = []
        for run_id in expected:
            run = runs.get(run_id)
            if run is None or run.state in UNSETTLED:
                left.append((run_id, run_id in ran, run.state.value if run else None))
            elif run.state in (RunState.SKIPPED, RunState.LOST) and not run.error:
                left.append((run_id, run_id in ran, f"{run.state.value} without a reason"))
            elif run.state == RunState.LOST and lost_ok:
                continue
            elif run.state != RunState.SKIPPED and not (run_id in ran and run.state == RunState.SUCCEEDED):
                left.append((run_id, run_id in ran, run.state.value))
        return left

    try:
        wait_for(lambda: not unsettled(), settle, "")
    except AssertionError:
        left = unsettled()
        ran_offered = [run_id for run_id, ran, state in left if ran and state == RunState.OFFERED.value]
        raise AssertionError(
            f"{fault}: {len(left)} of {len(expected)} slots neither ran once nor were recorded skipped with a "
            f"reason (id, in ledger, state): {left[:10]}"
            + (f"; {len(ran_offered)} ran (in the ledger) but left offered: {ran_offered[:5]}" if ran_offered else "")
            + f"; logs in {cluster.workdir}"
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
    lost = [run for run in runs.values() if run.state == RunState.LOST]
    ran_and_skipped = [run.id for run in skipped if run.id in ran_at]
    figures = Figures(
        fault,
        len(expected),
        len(ran_at),
        sum(1 for late in lateness.values() if late > 2),
        len(skipped),
        len(twice),
        tuple(sorted({(run.error or "").split(":")[0] for run in skipped})),
        len(lost),
    )
    print(figures)
    assert not twice, f"{fault}: ran more than once: {twice}"
    assert not ran_and_skipped, f"{fault}: ran although recorded skipped: {ran_and_skipped}"
    assert not too_late, f"{fault}: ran later than their grace: {too_late}"
    ran_lost = sum(1 for run in lost if run.id in ran_at)
    assert figures.ran - ran_lost + figures.skipped + figures.lost == figures.expected
    return figures
