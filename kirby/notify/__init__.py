"""Notifications: which run changes notify whom, the durable outbox, and its delivery.

* ``events``: the notification events of a run's state change (failed, timed_out, lost, missed,
  suspended, crash_loop, recovered) and the ``notify_on`` names that subscribe to them;
* ``outbox``: ``enqueue(session, runs)`` writes one ``notifications`` row per run, event and
  subscribed group, in the caller's transaction (the recorder's), unique on its key;
* ``message``: what a notification says (job, run, state, exit, duration, log tail, links);
* ``email`` (SMTP, ``KIRBY_SMTP_URL``) and ``webhook`` (JSON / Slack / Teams, HMAC-signed): channels;
* ``notifier``: ``Notifier.step(now)`` delivers due rows with retries, backoff, cooldown and
  digests, recording each attempt; ``kirby web`` runs it in a background thread.
"""
