"""/metrics in the Prometheus text format (0.0.4).

* ``kirby_runs{state=...}``: runs by state (one grouped count on ``ix_runs_state_scheduled``);
* ``kirby_dispatch_lag_seconds``: summary of ``started_at - scheduled_at`` over the latest
  ``LAG_SAMPLE`` started scheduled runs (quantiles 0.5, 0.9, 0.99, sum and count);
* ``kirby_leader_epoch``, ``kirby_leader_present`` and ``kirby_supervisors_alive`` from the lease store;
* ``kirby_consumer_partitions{process="web",stream="events"}`` (this web process's run events
  consumer) and ``{process="supervisor",supervisor=NAME,stream="offers"}`` (from each supervisor's
  heartbeat): partitions of its topic the consumer holds; 0 means it receives nothing. Absent on a
  bus without partitions (the embedded bus) and while a consumer is joining;
* ``kirby_supervisor_busy{supervisor=NAME}`` and ``kirby_supervisor_capacity{supervisor=NAME}``
  (from each supervisor's heartbeat): scheduled runs it has in hand (claimed, not over) and how
  many it runs at once (``--concurrency``); a supervisor at capacity leaves offers to the others.
* ``kirby_lease_store_amnesia_detected{supervisor=NAME}`` (from each supervisor's heartbeat): the
  losses of the lease store's data (issue 10) that supervisor process noticed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kirby.lease.base import LeaseStore
from kirby.models import Run, RunState

LAG_SAMPLE = 1000
QUANTILES = (0.5, 0.9, 0.99)


def quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of non-empty ``sorted_values``."""
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def _dispatch_lags(session: Session) -> list[float]:
    query = (
        select(Run.scheduled_at, Run.started_at)
        .where(Run.trigger == "schedule", Run.started_at.is_not(None))
        .order_by(Run.scheduled_at.desc())
        .limit(LAG_SAMPLE)
    )
    return sorted(max(0.0, (started - scheduled).total_seconds()) for scheduled, started in session.execute(query))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _consumer_partitions(events_partitions: int | None, alive: list) -> list[str]:
    lines = [
        "# HELP kirby_consumer_partitions Partitions of its topic a Kirby consumer holds (0: it receives nothing).",
        "# TYPE kirby_consumer_partitions gauge",
    ]
    if events_partitions is not None:
        lines.append(f'kirby_consumer_partitions{{process="web",stream="events"}} {events_partitions}')
    for supervisor in sorted(alive, key=lambda s: s.name):
        held = supervisor.info.get("offer_partitions")
        if held is not None:
            name = _label(supervisor.name)
            lines.append(
                f'kirby_consumer_partitions{{process="supervisor",supervisor="{name}",stream="offers"}} {held}'
            )
    return lines


def _capacity(alive: list) -> list[str]:
    lines = []
    for metric, key, meaning in (
        ("kirby_supervisor_busy", "busy", "Scheduled runs a supervisor has in hand (claimed, not over)."),
        ("kirby_supervisor_capacity", "capacity", "Scheduled runs a supervisor runs at once (--concurrency)."),
    ):
        lines += [f"# HELP {metric} {meaning}", f"# TYPE {metric} gauge"]
        for supervisor in sorted(alive, key=lambda s: s.name):
            value = supervisor.info.get(key)
            if isinstance(value, int):
                lines.append(f'{metric}{{supervisor="{_label(supervisor.name)}"}} {value}')
    return lines


def render_metrics(
    session: Session, lease_store: LeaseStore, now: datetime, events_partitions: int | None = None
) -> str:
    counts = dict.fromkeys(RunState, 0)
    for state, count in session.execute(select(Run.state, func.count()).group_by(Run.state)):
        counts[state] = count
    lines = ["# HELP kirby_runs Runs recorded, by state.", "# TYPE kirby_runs gauge"]
    lines += [f'kirby_runs{{state="{state.value}"}} {count}' for state, count in counts.items()]

    lags = _dispatch_lags(session)
    lines += [
        f"# HELP kirby_dispatch_lag_seconds Due instant to process start, latest {LAG_SAMPLE} scheduled runs.",
        "# TYPE kirby_dispatch_lag_seconds summary",
    ]
    if lags:
        lines += [f'kirby_dispatch_lag_seconds{{quantile="{q}"}} {quantile(lags, q):.6f}' for q in QUANTILES]
    lines += [f"kirby_dispatch_lag_seconds_sum {sum(lags):.6f}", f"kirby_dispatch_lag_seconds_count {len(lags)}"]

    leader = lease_store.leader()
    alive = lease_store.supervisors()
    lines += [
        "# HELP kirby_leader_epoch The newest leader epoch issued.",
        "# TYPE kirby_leader_epoch gauge",
        f"kirby_leader_epoch {lease_store.current_epoch()}",
        "# HELP kirby_leader_present 1 when a live leader holds the lease.",
        "# TYPE kirby_leader_present gauge",
        f"kirby_leader_present {1 if leader else 0}",
        "# HELP kirby_supervisors_alive Supervisors with a live heartbeat.",
        "# TYPE kirby_supervisors_alive gauge",
        f"kirby_supervisors_alive {len(alive)}",
        *_consumer_partitions(events_partitions, alive),
        *_capacity(alive),
        "# HELP kirby_lease_store_amnesia_detected Losses of the lease store's data a supervisor process noticed.",
        "# TYPE kirby_lease_store_amnesia_detected counter",
        *(
            f'kirby_lease_store_amnesia_detected{{supervisor="{_label(s.name)}"}} {int(s.info["amnesia"])}'
            for s in sorted(alive, key=lambda s: s.name)
            if "amnesia" in s.info
        ),
        "# HELP kirby_metrics_generated_timestamp_seconds When this page was built.",
        "# TYPE kirby_metrics_generated_timestamp_seconds gauge",
        f"kirby_metrics_generated_timestamp_seconds {now.timestamp():.3f}",
    ]
    return "\n".join(lines) + "\n"
