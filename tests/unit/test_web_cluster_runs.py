"""``/cluster/runs``: the record of slot runs a leader rebuilds the lease store from after
amnesia (issue 10); cluster token only, paged, with each job's newest slot."""

from __future__ import annotations

from test_web_support import T0, TOKEN, admin_client, app, seed, settings, web  # noqa: F401

from kirby.events import RunEvent
from kirby.recorder import record

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def recorded(app, run_id: str, kind: str = "claimed") -> None:
    with app.extensions["kirby"].database.session() as s:
        record(s, [RunEvent(kind, run_id, T0, "sup-a" if kind != "offered" else None, {})])


def test_the_record_of_slot_runs_since_an_instant_paged_with_the_newest_slot_per_job(app, admin_client):
    recorded(app, "backup:prod:20260101T000000Z")  # before ``since``: not listed
    for second in range(3):
        recorded(app, f"backup:prod:20260102T03040{second}Z", "offered" if second == 2 else "claimed")
    recorded(app, "backup:prod:manual-abc")  # not a slot run
    client = app.test_client()
    since = {"since": "2026-01-02T00:00:00+00:00"}
    assert client.get("/cluster/runs", query_string=since).status_code == 401
    assert admin_client.get("/cluster/runs", query_string=since).status_code == 401  # a session is no cluster
    bad = client.get("/cluster/runs?since=yesterday", headers=AUTH)
    assert bad.status_code == 400 and "since='yesterday'" in bad.get_json()["error"]

    first = client.get("/cluster/runs", query_string={**since, "limit": 2}, headers=AUTH).get_json()
    assert [(r["id"], r["state"], r["supervisor"]) for r in first["runs"]] == [
        ("backup:prod:20260102T030400Z", "claimed", "sup-a"),
        ("backup:prod:20260102T030401Z", "claimed", "sup-a"),
    ]
    assert first["runs"][0]["scheduled_at"] == "2026-01-02T03:04:00+00:00"
    assert first["latest"] == [{"job": "backup", "environment": "prod", "scheduled_at": "2026-01-02T03:04:02+00:00"}]
    page = {**since, "limit": 2, "after": first["next"]}
    rest = client.get("/cluster/runs", query_string=page, headers=AUTH).get_json()
    assert [(r["id"], r["state"]) for r in rest["runs"]] == [("backup:prod:20260102T030402Z", "offered")]
    assert rest["next"] is None and "latest" not in rest
    later = client.get("/cluster/runs?since=2026-01-02T03:04:01Z", headers=AUTH).get_json()
    assert [r["id"] for r in later["runs"]] == ["backup:prod:20260102T030401Z", "backup:prod:20260102T030402Z"]


def test_metrics_count_the_amnesia_each_supervisor_noticed(app, admin_client):
    leases = app.extensions["kirby"].lease_store
    leases.register_supervisor("s1", "i1", 60, {"amnesia": 2})
    leases.register_supervisor("s2", "i2", 60, {})  # an older supervisor: no figure
    text = admin_client.get("/metrics").get_data(as_text=True)
    assert "# TYPE kirby_lease_store_amnesia_detected counter" in text
    assert 'kirby_lease_store_amnesia_detected{supervisor="s1"} 2' in text
    assert 'kirby_lease_store_amnesia_detected{supervisor="s2"}' not in text
