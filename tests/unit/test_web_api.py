"""JSON API, live logs over SSE (escaping, resume), run now on the embedded bus, metrics."""

from __future__ import annotations

import json
from datetime import timedelta

from test_web_support import T0, TOKEN, admin_client, app, seed, settings, viewer_client, web  # noqa: F401

from kirby.events import RunEvent
from kirby.models import Run, RunState
from kirby.recorder import record

AUTH = {"Authorization": f"Bearer {TOKEN}"}
XSS = "<script>alert(1)</script>"


def finished_run(app, run_id: str = "backup:prod:20260102T030405Z", lines=("one", XSS, "three"), state="succeeded"):
    events = [
        RunEvent("claimed", run_id, T0, "sup-a", {"job": "backup", "environment": "prod"}),
        RunEvent("started", run_id, T0 + timedelta(seconds=1), "sup-a"),
    ]
    events += [
        RunEvent("log", run_id, T0 + timedelta(seconds=2), "sup-a", {"seq": i, "stream": "stdout", "text": t})
        for i, t in enumerate(lines)
    ]  # seq counts from 0, as the executor numbers lines
    if state:
        events.append(
            RunEvent("finished", run_id, T0 + timedelta(seconds=3), "sup-a", {"state": state, "exit_code": 0})
        )
    with app.extensions["kirby"].database.session() as s:
        record(s, events)
    return run_id


def sse_events(response) -> list[dict]:
    body = b"".join(response.response).decode()
    events = []
    for block in filter(None, body.strip().split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if not fields:  # a comment (the opening, a keep-alive): no event, as for a browser
            continue
        events.append(
            {"id": fields.get("id"), "event": fields.get("event", "message"), "data": json.loads(fields["data"])}
        )
    return events


def test_runs_api_filters_and_paginates(app, viewer_client):
    for i in range(7):
        finished_run(app, f"backup:prod:20260102T03040{i}Z", lines=(), state="failed" if i % 2 else "succeeded")
    page = viewer_client.get("/api/runs?job=backup&state=failed&per_page=2").get_json()
    assert [r["state"] for r in page["runs"]] == ["failed", "failed"] and page["has_next"] is True
    last = viewer_client.get("/api/runs?job=backup&state=failed&per_page=2&page=2").get_json()
    assert len(last["runs"]) == 1 and last["has_next"] is False
    assert page["runs"][0]["scheduled_at"] > page["runs"][1]["scheduled_at"]
    bad = viewer_client.get("/api/runs?state=exploded")
    assert bad.status_code == 400 and "state='exploded'" in bad.get_json()["error"]
    assert viewer_client.get("/api/runs?since=yesterday").status_code == 400


def test_run_detail_and_logs_api(app):
    run_id = finished_run(app)
    client = app.test_client()
    detail = client.get(f"/api/runs/{run_id}", headers=AUTH).get_json()
    assert detail["state"] == "succeeded" and detail["supervisor"] == "sup-a" and "config" not in detail
    logs = client.get(f"/api/runs/{run_id}/logs?after=0", headers=AUTH).get_json()
    assert [line["text"] for line in logs["lines"]] == [XSS, "three"]
    everything = client.get(f"/api/runs/{run_id}/logs", headers=AUTH).get_json()
    assert [line["seq"] for line in everything["lines"]] == [0, 1, 2]
    assert client.get("/api/runs/nope:x:y", headers=AUTH).status_code == 404


def test_sse_streams_a_run_and_resumes_after_the_last_event_id(app, viewer_client):
    run_id = finished_run(app)
    events = sse_events(viewer_client.get(f"/logs/stream?run={run_id}"))
    assert [(e["id"], e["data"].get("text")) for e in events[:3]] == [("0", "one"), ("1", XSS), ("2", "three")]
    assert events[-1]["event"] == "end" and events[-1]["data"]["state"] == "succeeded"
    bad = viewer_client.get(f"/logs/stream?run={run_id}", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.get_json()["error"]
    resumed = sse_events(viewer_client.get(f"/logs/stream?run={run_id}", headers={"Last-Event-ID": "1"}))
    assert [e["id"] for e in resumed] == ["2", None] and resumed[0]["data"]["text"] == "three"


def test_sse_follows_new_lines_of_a_running_run(app, viewer_client):
    app.config["KIRBY_SSE_LIFETIME"] = 0.3
    app.config["KIRBY_SSE_POLL"] = 0.05
    run_id = finished_run(app, lines=("first",), state=None)
    response = viewer_client.get(f"/logs/stream?run={run_id}")
    stream = response.response
    assert next(stream).decode() == ": open\n\n"  # the first byte goes at once
    first = next(stream).decode()
    assert first.startswith("id: 0\n")
    with app.extensions["kirby"].database.session() as s:
        record(s, [RunEvent("log", run_id, T0, "sup-a", {"seq": 1, "stream": "stderr", "text": "second"})])
    rest = b"".join(stream).decode()  # ends after the lifetime: the browser reconnects
    assert "id: 1\n" in rest and '"second"' in rest and "event: end" not in rest


def test_sse_tail_of_a_job_uses_row_ids(app, viewer_client):
    finished_run(app, "backup:prod:20260102T030405Z", lines=("a", "b"))
    finished_run(app, "backup:prod:20260102T030406Z", lines=("c",))
    app.config["KIRBY_SSE_LIFETIME"] = 0
    events = sse_events(viewer_client.get("/logs/stream?job=backup"))
    assert [e["data"]["text"] for e in events] == ["a", "b", "c"]
    ids = [int(e["id"]) for e in events]
    resumed = sse_events(viewer_client.get("/logs/stream?job=backup", headers={"Last-Event-ID": str(ids[1])}))
    assert [e["data"]["text"] for e in resumed] == ["c"]
    assert sse_events(viewer_client.get("/logs/stream?job=other")) == []


def test_log_lines_are_escaped_in_pages(app, viewer_client):
    run_id = finished_run(app)
    page = viewer_client.get(f"/admin/run/details/?id={run_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and XSS not in page


def test_run_now_publishes_an_offer_and_records_it(app):
    ids = seed(app)
    state = app.extensions["kirby"]
    consumer = state.bus.offer_consumer("test-member")
    try:
        response = app.test_client().post("/api/jobs/backup/run", headers=AUTH)
        assert response.status_code == 202
        run_id = response.get_json()["run_id"]
        assert run_id.startswith("backup:prod:manual-")
        deliveries = consumer.poll(timeout=5)
        assert [d.message.run_id for d in deliveries] == [run_id]
        offer = deliveries[0].message
        assert offer.trigger == "manual" and offer.epoch is None and offer.config["CTX_SECRET"] == "hunter2-ctx"
        consumer.ack(deliveries[0])
    finally:
        consumer.close()
    with state.database.session() as s:
        run = s.get(Run, run_id)
        assert run.state == RunState.OFFERED and run.trigger == "manual" and run.context_id == ids["context_id"]


def test_run_now_from_the_contexts_page(app, admin_client):
    ids = seed(app)
    response = admin_client.post(f"/admin/context/run-now/{ids['context_id']}")
    assert response.status_code == 302 and "/admin/logs/?run=backup" in response.headers["Location"]
    with app.extensions["kirby"].database.session() as s:
        assert s.query(Run).filter(Run.trigger == "manual").count() == 1


def test_run_now_of_an_unknown_job_is_a_clear_error(app, admin_client):
    response = admin_client.post("/api/jobs/ghost/run")
    assert response.status_code == 400 and "no job named 'ghost'" in response.get_json()["error"]


def test_metrics_in_prometheus_format(app, viewer_client):
    finished_run(app)
    finished_run(app, "backup:prod:20260102T030406Z", lines=(), state="failed")
    text = viewer_client.get("/metrics").get_data(as_text=True)
    assert 'kirby_runs{state="succeeded"} 1' in text and 'kirby_runs{state="failed"} 1' in text
    assert 'kirby_dispatch_lag_seconds{quantile="0.5"} 1.000000' in text
    assert "kirby_dispatch_lag_seconds_count 2" in text
    assert "kirby_leader_epoch 0" in text and "kirby_supervisors_alive 0" in text
    assert app.test_client().get("/metrics").status_code == 401


def test_the_schedule_document_for_the_token_holder(app):
    seed(app)
    document = app.test_client().get("/schedule", headers=AUTH).get_json()
    [entry] = document["contexts"]
    assert entry["job"] == "backup" and entry["config"]["CTX_SECRET"] == "hunter2-ctx"
    assert entry["schedules"][0]["cron"] == "0 3 * * *"


def test_the_supervisors_page_shows_the_registry_the_leader_and_daemons(app, viewer_client):
    leases = app.extensions["kirby"].lease_store
    leases.register_supervisor("alpha", "instance-a", ttl=60)
    leases.register_supervisor("beta", "instance-b", ttl=60)
    epoch = leases.acquire_leader("beta", ttl=60)
    assert leases.acquire_lease("daemon:ticker:prod", "alpha@instance-a", ttl=60)
    page = viewer_client.get("/admin/supervisors/").get_data(as_text=True)
    assert "instance-a" in page and "instance-b" in page
    assert f"<strong>beta</strong> (epoch {epoch}" in page and f"yes (epoch {epoch})" in page
    assert "<td>ticker:prod</td>" in page


def test_log_streams_end_at_once_when_the_server_stops(app):
    """Shutdown does not wait for open streams' lifetimes (nor for their next poll)."""
    import threading
    import time

    from kirby.web.logs import tail_events

    state = app.extensions["kirby"]
    stream = tail_events(state, None, after=0, poll=30, lifetime=60)
    done = threading.Event()
    threading.Thread(target=lambda: (list(stream), done.set()), daemon=True).start()
    time.sleep(0.2)  # the stream is now waiting for its next poll
    started = time.monotonic()
    state.stopping.set()
    assert done.wait(5), "the stream kept its thread after the server started stopping"
    assert time.monotonic() - started < 2


def batched_run(app, run_id: str, lines: int, finished: bool = True) -> str:
    """A run whose ``lines`` lines arrived as one event and are stored in rows of ROW_LINES."""
    events = [
        RunEvent("claimed", run_id, T0, "sup-a", {"job": "backup", "environment": "prod"}),
        RunEvent("log", run_id, T0, "sup-a", {"seq": 0, "stream": "stdout", "texts": [f"l{i}" for i in range(lines)]}),
    ]
    if finished:
        events.append(RunEvent("finished", run_id, T0, "sup-a", {"state": "succeeded", "exit_code": 0}))
    with app.extensions["kirby"].database.session() as s:
        record(s, events)
    return run_id


def test_sse_streams_lines_stored_together_one_by_one_and_resumes_inside_a_row(app, viewer_client):
    run_id = batched_run(app, "backup:prod:20260102T030405Z", 2500)
    events = sse_events(viewer_client.get(f"/logs/stream?run={run_id}"))
    assert [e["id"] for e in events[:-1]] == [str(i) for i in range(2500)]
    assert [e["data"]["text"] for e in events[:-1]] == [f"l{i}" for i in range(2500)]
    resumed = sse_events(viewer_client.get(f"/logs/stream?run={run_id}", headers={"Last-Event-ID": "1499"}))
    assert [e["data"]["seq"] for e in resumed[:-1]] == list(range(1500, 2500)) and resumed[-1]["event"] == "end"
    page = app.test_client().get(f"/api/runs/{run_id}/logs?after=995&limit=10", headers=AUTH).get_json()
    assert [line["seq"] for line in page["lines"]] == list(range(996, 1006))  # across two rows


def test_sse_tail_starts_with_the_newest_lines_of_rows_and_resumes_after_a_row(app, viewer_client):
    from kirby.web.logs import BACKLOG

    first = batched_run(app, "backup:prod:20260102T030405Z", 1500)  # rows of 1000 and 500 lines
    app.config["KIRBY_SSE_LIFETIME"] = 0
    events = sse_events(viewer_client.get("/logs/stream?job=backup"))
    assert [e["data"]["seq"] for e in events] == list(range(1500 - BACKLOG, 1500))  # not whole rows
    last_row = events[-1]["id"]
    batched_run(app, "backup:prod:20260102T030406Z", 3)
    resumed = sse_events(viewer_client.get("/logs/stream?job=backup", headers={"Last-Event-ID": last_row}))
    assert [(e["data"]["run_id"], e["data"]["text"]) for e in resumed] == [
        ("backup:prod:20260102T030406Z", f"l{i}") for i in range(3)
    ]
    assert first != resumed[0]["data"]["run_id"]
