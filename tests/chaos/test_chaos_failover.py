"""A Redis replica promoted after losing the primary's last writes (issue 10): asynchronous
replication means a failover can forget what the primary acknowledged last (claims, cursors, the
record of published slots). Real processes, as in ``test_chaos.py``; audited from the scripts'
ledgers and the runs table."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.chaos.audit import audit, ledger
from tests.chaos.test_chaos import GRACE, Daemon, audit_five, runs_continue, start
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.redis]


def redis_cli(server, *command: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(server.port), *command], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def info(server, section: str) -> dict[str, str]:
    lines = (line.partition(":") for line in redis_cli(server, "info", section).splitlines() if ":" in line)
    return {key: value.strip() for key, _, value in lines}


def in_sync(primary, replica) -> bool:
    mine, theirs = info(replica, "replication"), info(primary, "replication")
    return mine.get("master_link_status") == "up" and mine["master_repl_offset"] == theirs["master_repl_offset"]


def test_a_replica_promoted_after_losing_the_last_writes_is_amnesia_and_runs_no_slot_twice(chaos, start_private_redis):
    """A primary (no persistence) and its replica (``--replicaof``). The failover: the replica stops
    following (``REPLICAOF NO ONE``), the primary goes on acknowledging writes for 1.5 s (what an
    asynchronous replica has not received yet when the primary dies), the primary is SIGKILLed and
    the promoted replica takes over the primary's address (``CONFIG SET port``: what a virtual IP or
    a DNS switch does), so the supervisors reconnect to it.

    The generation marker survived (it was replicated) but records the primary's server run id;
    the promoted replica has its own, so every supervisor treats the failover as a restart: the
    generation is closed, claims are written back, the leader holds and rebuilds from the runs
    table. No slot runs twice; every slot ran or is recorded with a reason."""
    made = chaos()
    primary = made.redis
    replica = start_private_redis("--replicaof", "127.0.0.1", str(primary.port))
    daemon = Daemon.of(made)
    cluster, path = start(made, daemon=daemon.pidfile)
    daemon.running(cluster)
    wait_for(lambda: len(ledger(path)) >= 5, 60, "five runs before the fault")
    wait_for(lambda: in_sync(primary, replica), 60, "the replica did not catch up with the primary")
    boot = redis_cli(primary, "hget", made.cluster.env["KIRBY_REDIS_PREFIX"] + "generation", "boot").strip()
    assert boot == info(primary, "server")["run_id"], "the generation marker does not hold the server's run id"
    assert info(replica, "server")["run_id"] != boot, "the replica has the primary's run id: a failover goes unseen"

    begin = datetime.now(timezone.utc) - timedelta(seconds=3)  # slots in flight at the fault are audited too
    redis_cli(replica, "replicaof", "no", "one")
    detached = int(info(replica, "replication")["master_repl_offset"])
    time.sleep(1.5)  # claims, cursors and the record of published slots the replica will never have
    written = int(info(primary, "replication")["master_repl_offset"])
    primary.kill()
    redis_cli(replica, "config", "set", "port", str(primary.port))
    replica.port = primary.port
    end = runs_continue(path, after=15, timeout=180)
    lost = written - detached
    fault = f"Redis replica promoted, the primary's last 1.5 s ({lost} bytes of replication stream) lost"
    audit(cluster, "tick", path, begin, end, fault, GRACE)
    audit_five(cluster, begin, end, fault, GRACE)
    daemon.audit(fault)
    assert lost > 0, "the primary wrote nothing in its last 1.5 s: the failover lost nothing"
    noticed = [name for name in ("s1", "s2", "s3") if "server restarted" in cluster.log_of(name)]
    assert noticed == ["s1", "s2", "s3"], f"the failover was noticed by {noticed} only; see {cluster.workdir}"
    assert any("rebuilt the lease store from the runs table" in cluster.log_of(n) for n in ("s1", "s2", "s3"))
