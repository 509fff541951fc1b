"""The Redis lease store (redis-py is imported only here). See ``base.py`` for the contract.

Keys (after ``KIRBY_REDIS_PREFIX``, default ``kirby:``), each a hash with a server-side PX expiry
unless noted:

* ``leader`` {owner, epoch, token} and ``epoch`` (a counter, no expiry). Acquire is one Lua script:
  if ``leader`` is absent, INCR ``epoch`` and write the lease under it.
* ``cursors`` (no expiry): schedule key -> ISO instant. A cursor write is accepted only while the
  ``leader`` key exists with the writer's epoch: it is refused once a newer epoch was issued, and
  also when the lease merely expired (the old leader must win a new election before writing).
* ``claim:<run id>`` {supervisor, instance, attempt, token, offer, claimed_s/us, started_s/us,
  released, settled}: no expiry while active (listed in the sorted set ``claims:active``, score =
  claim time in ms); kept ``CLAIM_RETENTION`` once settled.
* ``lease:<name>`` {owner, generation} with the lease's TTL, indexed per key space (the part of the
  name before its first ``:``, e.g. ``daemon``, ``overlap``) in the sorted set ``leases:<space>``
  (score = expiry in ms); ``lease-generations`` (a hash, no expiry): name -> last generation.
* ``published:<schedule key>`` (a sorted set, no expiry): the slots published, scored by their
  instant, pruned past the misfire grace.
* ``generation`` {marker, open, boot, closed_ms, rebuilt} (no expiry): the amnesia detector
  (``redis_record.py``); ``boot`` is the server's ``run_id`` (INFO), new at every Redis start.
* ``cancel:<run id>``: a short-lived cancel request (a string with a PX expiry).
* ``supervisor:<name>`` {instance, info, beat_s, beat_us}, indexed in the sorted set
  ``supervisors`` (score = expiry in ms).

Supervisors, daemon holders and active claims are read from these indexes, never by SCAN, so
their cost does not grow with the number of retained claims (``list_claims`` alone scans: it is
for tools and tests). Upgrading from a version before these indexes is a one-time reset of the
daemon leases (old ``daemon:<name>`` keys are ignored and expire within their TTL) and of the
replace requests (old ``claim:cancel:<run id>`` keys are ignored); claims are kept.

Renew, release and unregister are compare-and-set Lua scripts (never a bare EXPIRE or DEL).
Timestamps come from the server's clock (TIME), so supervisors' clocks need not agree.

Retries: ConnectionError/TimeoutError are retried ``EXT_RETRIES`` times, ``EXT_WAIT_BETWEEN_RETRIES``
apart, then become one LeaseError line. A retried write whose first reply was lost must not change
the answer, so the non-idempotent writes carry a token unique to the call: a retried acquire or
claim that finds its own token stored knows it succeeded the first time. Renew, cursor writes,
daemon acquire and register are idempotent. A release retried after a lost reply finds the lease
gone and returns False, although the first attempt released it; either way nobody holds it.

Epochs and fencing: a new epoch exceeds both the ``epoch`` counter and the highest epoch the
acquiring store has seen (from ``current_epoch``, ``leader`` and its own acquisitions), so it
stays strictly increasing when Redis forgets the counter while supervisors keep running. A cursor
write compares the lease's epoch, owner and (for a lease this store acquired) its token: a zombie
whose epoch number a forgetful Redis issued again is still refused.

Durability: claims, cursors and the epoch counter live in Redis memory. A Redis that restarts
(empty, or with the last second of ``appendfsync everysec`` lost) is noticed through the
``generation`` marker: claims are refused until the leader has rebuilt them from the runs table
(see ``kirby.supervisor.amnesia``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from kirby.config import Settings
from kirby.errors import LeaseError
from kirby.lease import lua
from kirby.lease.base import (
    CLAIM_RETENTION,
    Claim,
    ClaimRequest,
    ClaimsClosed,
    Leader,
    LeaseHolder,
    LeaseStore,
    StaleEpoch,
    SupervisorInfo,
    as_utc,
    name_taken,
)
from kirby.lease.lua import ACQUIRE_LEADER, COMPARE_AND_EXTEND_OR_DELETE, LEADER, SET_CURSORS
from kirby.lease.redis_record import RecordMixin

SOCKET_TIMEOUT = 2.0  # seconds; no call waits longer than this per attempt
SCAN_BATCH = 500
ISSUE_11_SCRIPTS = (
    "CLAIM_DELIVERY",
    "CLAIM",
    "MARK_STARTED",
    "RELEASE_CLAIM",
    "SETTLE",
    "ACQUIRE_LEASE",
    "RENEW_OR_RELEASE_LEASE",
    "LIVE",
    "REGISTER",
    "UNREGISTER",
    "CHECK_GENERATION",
    "OPEN_GENERATION",
    "RESTORE_CLAIMS",
)
T = TypeVar("T")


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    user = parsed.username or ""
    host = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=f"{user}:***@{host}").geturl()


def _reason(error: Exception) -> str:
    """'Connection refused' out of redis-py's 'Error 111 connecting to host:port. Connection refused.'"""
    text = str(error).strip()
    match = re.match(r"Error \d+ [^.]*?(?:\S+:\d+|socket)\.\s*(.*)$", text)
    return (match.group(1) if match else text).rstrip(".") or type(error).__name__


def _is_transient(error: BaseException) -> bool:
    auth = (redis.AuthenticationError, redis.exceptions.AuthorizationError)
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError)) and not isinstance(error, auth)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _stamp(seconds: str | int, microseconds: str | int) -> datetime:
    return datetime.fromtimestamp(int(seconds) + int(microseconds) / 1e6, timezone.utc)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisLeaseStore(RecordMixin, LeaseStore):
    """The lease store on Redis at ``settings.redis_url`` (redis:// or rediss://, password allowed)."""

    def __init__(self, settings: Settings, prefix: str | None = None):
        if not settings.redis_url:
            raise LeaseError("REDIS_URL is not set: set it to e.g. redis://127.0.0.1:6379/0")
        self._url = settings.redis_url
        self._prefix = settings.redis_prefix if prefix is None else prefix
        self._retrying = Retrying(  # its per-call state is thread-local: one instance serves all threads
            stop=stop_after_attempt(settings.ext_retries + 1),
            wait=wait_fixed(settings.ext_wait_between_retries),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        self._redis = redis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # tenacity below owns the retry policy
        )
        script = self._redis.register_script
        self._acquire_leader = script(ACQUIRE_LEADER)
        self._compare = script(COMPARE_AND_EXTEND_OR_DELETE)
        self._leader = script(LEADER)
        self._set_cursors = script(SET_CURSORS)
        self._seen = 0  # the highest epoch this store has seen: a floor for the next one (amnesia)
        self._tokens: dict[tuple[str, int], str] = {}  # (owner, epoch) -> token of our acquisitions
        self._scripts = {name: script(getattr(lua, name)) for name in ISSUE_11_SCRIPTS}

    # -- plumbing -------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _call(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` with retries on connection errors; any Redis failure -> LeaseError."""
        try:
            return self._retrying(operation)
        except redis.RedisError as error:
            raise self._failure(error) from None

    def _failure(self, error: Exception) -> LeaseError:
        """One line naming the address (password masked), the variable and the fix."""
        address = f"Redis at {masked_url(self._url)} (REDIS_URL)"
        if isinstance(error, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
            return LeaseError(f"{address} refused the credentials: {_reason(error)}; fix the password in REDIS_URL")
        if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
            return LeaseError(
                f"cannot reach {address}: {_reason(error)}; check the address or start Redis (deploy/services up redis)"
            )
        return LeaseError(f"{address} failed: {_reason(error)}")

    def _scan(self, kind: str) -> list[str]:
        """Names of the live keys ``<prefix><kind>:<name>``."""
        start = len(self._key(kind, ""))
        pattern = _glob_escape(self._key(kind, "")) + "*"
        return self._call(lambda: [key[start:] for key in self._redis.scan_iter(match=pattern, count=SCAN_BATCH)])

    def _read_hashes(self, kind: str) -> dict[str, dict[str, str]]:
        names = self._scan(kind)

        def read() -> list[dict[str, str]]:
            pipeline = self._redis.pipeline(transaction=False)
            for name in names:
                pipeline.hgetall(self._key(kind, name))
            return pipeline.execute()

        return {name: fields for name, fields in zip(names, self._call(read)) if fields}  # expired since the scan: {}

    # -- leader lease ---------------------------------------------------------------------------
    def acquire_leader(self, owner: str, ttl: float) -> int | None:
        """The new epoch exceeds every epoch this store has seen (``_seen``), even if Redis forgot them."""
        token = uuid.uuid4().hex  # the same for every retry of this call
        keys = [self._key("leader"), self._key("epoch")]
        epoch = self._call(lambda: self._acquire_leader(keys=keys, args=[owner, token, _ms(ttl), self._seen]))
        if epoch is None:
            return None
        self._saw(int(epoch))
        self._tokens[(owner, int(epoch))] = token
        return int(epoch)

    def renew_leader(self, owner: str, epoch: int, ttl: float) -> bool:
        args = [_ms(ttl), "owner", owner, "epoch", str(epoch)]
        return self._call(lambda: self._compare(keys=[self._key("leader")], args=args)) == 1

    def release_leader(self, owner: str, epoch: int) -> bool:
        args = ["", "owner", owner, "epoch", str(epoch)]
        return self._call(lambda: self._compare(keys=[self._key("leader")], args=args)) == 1

    def leader(self) -> Leader | None:
        held = self._call(lambda: self._leader(keys=[self._key("leader")]))
        if held is None:
            return None
        owner, epoch, pttl, now_s, now_us = held
        expires_at = datetime.fromtimestamp(int(now_s) + int(now_us) / 1e6 + max(int(pttl), 0) / 1000, timezone.utc)
        return Leader(owner=owner, epoch=self._saw(int(epoch)), expires_at=expires_at)

    def current_epoch(self) -> int:
        return self._saw(int(self._call(lambda: self._redis.get(self._key("epoch"))) or 0))

    # -- cursors --------------------------------------------------------------------------------
    def get_cursor(self, schedule_key: str) -> datetime | None:
        return self.get_cursors([schedule_key]).get(schedule_key)

    def set_cursor(self, schedule_key: str, instant: datetime, epoch: int, owner: str | None = None) -> None:
        self.set_cursors({schedule_key: instant}, epoch, owner)

    def get_cursors(self, schedule_keys: list[str]) -> dict[str, datetime]:
        """One HMGET."""
        if not schedule_keys:
            return {}
        texts = self._call(lambda: self._redis.hmget(self._key("cursors"), schedule_keys))
        return {key: datetime.fromisoformat(text) for key, text in zip(schedule_keys, texts) if text is not None}

    def set_cursors(self, cursors: dict[str, datetime], epoch: int, owner: str | None = None) -> None:
        """One script: all written, or none (StaleEpoch). With ``owner``, the lease must be that owner's
        and, when this store acquired it, carry the token it was acquired with."""
        if not cursors:
            return
        token = self._tokens.get((owner, epoch), "") if owner else ""
        args = [str(epoch), owner or "", token] + [
            item for key, instant in cursors.items() for item in (key, as_utc(instant).isoformat())
        ]
        keys = [self._key("leader"), self._key("cursors")]
        if self._call(lambda: self._set_cursors(keys=keys, args=args)) != 1:
            raise StaleEpoch(f"epoch {epoch} no longer holds the leader lease; cursors {sorted(cursors)} not written")

    # -- run claims, named leases, cancel requests, registry (issue 11) --------------------------
    def _run(self, script: str, keys: list[str], args: list) -> Any:
        return self._call(lambda: self._scripts[script](keys=keys, args=args))

    def _live(self, index: str) -> tuple[list[str], datetime]:
        names, now_s, now_us = self._run("LIVE", [self._key(index)], [])
        return names, _stamp(now_s, now_us)

    def _hashes(self, kind: str, names: list[str], with_ttl: bool = False) -> list[tuple[str, dict, int]]:
        def read() -> list:
            pipeline = self._redis.pipeline(transaction=False)
            for name in names:
                pipeline.hgetall(self._key(kind, name))
                if with_ttl:
                    pipeline.pttl(self._key(kind, name))
            return pipeline.execute()

        replies = self._call(read) if names else []
        step = 2 if with_ttl else 1
        return [
            (name, replies[i * step], replies[i * step + 1] if with_ttl else -1)
            for i, name in enumerate(names)
            if replies[i * step]  # expired since the index was read: {}
        ]

    def claim_run(
        self,
        run_id: str,
        supervisor: str,
        attempt: int = 1,
        instance: str = "",
        offer: str | None = None,
        generation: str | None = None,
    ) -> bool:
        token = uuid.uuid4().hex  # a retry after a lost reply finds its own token: it won
        keys = [self._key("claim", run_id), self._key("claims", "active"), self._key("generation")]
        args = [supervisor, attempt, token, instance, offer or "", run_id, generation or ""]
        held = self._run("CLAIM", keys, args)
        if held is None:
            raise ClaimsClosed(f"run {run_id} not claimed: the lease store's generation is closed or new (amnesia)")
        return held == token

    def claim_runs(self, requests: list[ClaimRequest], generation: str | None = None) -> list[bool | None]:
        """One pipeline of CLAIM scripts (each atomic; a retried pipeline, or a request carrying the
        token of an earlier call whose reply was lost, finds its own tokens)."""
        tokens = [r.token or uuid.uuid4().hex for r in requests]

        def claim_all() -> list:
            pipeline = self._redis.pipeline(transaction=False)
            for r, token in zip(requests, tokens):
                keys = [self._key("claim", r.run_id), self._key("claims", "active"), self._key("generation")]
                args = [r.supervisor, r.attempt, token, r.instance, r.offer or "", r.run_id, generation or ""]
                self._scripts["CLAIM"](keys=keys, args=args, client=pipeline)
            return pipeline.execute()

        held = self._call(claim_all) if requests else []
        return [None if h is None else h == token for h, token in zip(held, tokens)]

    def get_claim(self, run_id: str) -> Claim | None:
        fields = self._call(lambda: self._redis.hgetall(self._key("claim", run_id)))
        return _claim(run_id, fields) if fields else None

    def list_claims(self) -> list[Claim]:
        return [_claim(run_id, fields) for run_id, fields in sorted(self._read_hashes("claim").items())]

    def mark_started(self, run_id: str, instance: str) -> bool:
        return self._run("MARK_STARTED", [self._key("claim", run_id)], [instance]) == 1

    def mark_runs_started(self, run_ids: list[str], instance: str) -> list[bool]:
        """One pipeline of MARK_STARTED scripts (idempotent: a retry gives the same answers)."""

        def mark_all() -> list:
            pipeline = self._redis.pipeline(transaction=False)
            for run_id in run_ids:
                self._scripts["MARK_STARTED"](keys=[self._key("claim", run_id)], args=[instance], client=pipeline)
            return pipeline.execute()

        return [reply == 1 for reply in (self._call(mark_all) if run_ids else [])]

    def release_claim(self, run_id: str, instance: str) -> bool:
        return self._run("RELEASE_CLAIM", [self._key("claim", run_id)], [instance]) == 1

    def settle_run(self, run_id: str) -> None:
        keys = [self._key("claim", run_id), self._key("claims", "active")]
        self._run("SETTLE", keys, [run_id, _ms(CLAIM_RETENTION)])

    def active_claims(self) -> list[Claim]:
        names = self._call(lambda: self._redis.zrange(self._key("claims", "active"), 0, -1))
        return [_claim(run_id, fields) for run_id, fields, _ in self._hashes("claim", names)]

    def acquire_lease(
        self, name: str, owner: str, ttl: float, replaces: str | None = None, generation: str | None = None
    ) -> int | None:
        keys = [
            self._key("lease", name),
            self._key("leases", _space(name)),
            self._key("lease-generations"),
            self._key("generation"),
        ]
        taken = self._run("ACQUIRE_LEASE", keys, [owner, _ms(ttl), name, replaces or "", generation or ""])
        if taken is not None and int(taken) < 0:
            raise ClaimsClosed(f"lease {name} not acquired: the lease store's generation is closed or new (amnesia)")
        return None if taken is None else int(taken)

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        keys = [self._key("lease", name), self._key("leases", _space(name))]
        return self._run("RENEW_OR_RELEASE_LEASE", keys, [owner, _ms(ttl), name]) == 1

    def renew_leases(self, names: list[str], owner: str, ttl: float) -> dict[str, bool]:
        def renew_all() -> list:
            pipeline = self._redis.pipeline(transaction=False)
            for name in names:
                keys = [self._key("lease", name), self._key("leases", _space(name))]
                self._scripts["RENEW_OR_RELEASE_LEASE"](keys=keys, args=[owner, _ms(ttl), name], client=pipeline)
            return pipeline.execute()

        replies = self._call(renew_all) if names else []
        return {name: reply == 1 for name, reply in zip(names, replies)}

    def release_lease(self, name: str, owner: str) -> bool:
        keys = [self._key("lease", name), self._key("leases", _space(name))]
        return self._run("RENEW_OR_RELEASE_LEASE", keys, [owner, "", name]) == 1

    def lease_holder(self, name: str) -> LeaseHolder | None:
        return self._lease_holders([name], None).get(name)

    def lease_holders(self, space: str) -> dict[str, LeaseHolder]:
        names, now = self._live(f"leases:{space}")
        return self._lease_holders(names, now)

    def _lease_holders(self, names: list[str], server_now: datetime | None) -> dict[str, LeaseHolder]:
        now = server_now or datetime.now(timezone.utc)
        return {
            name: LeaseHolder(
                name, fields["owner"], int(fields["generation"]), now + timedelta(milliseconds=max(ttl, 0))
            )
            for name, fields, ttl in self._hashes("lease", names, with_ttl=True)
            if "owner" in fields
        }

    def claim_delivery(self, key: str, owner: str, ttl: float) -> str | None:
        holder = self._run("CLAIM_DELIVERY", [self._key("delivery", key)], [owner, _ms(ttl)])
        return None if holder is None else (holder.decode() if isinstance(holder, bytes) else str(holder))

    def request_cancel(self, run_id: str, ttl: float) -> None:
        self._call(lambda: self._redis.set(self._key("cancel", run_id), "1", px=_ms(ttl)))

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self._call(lambda: self._redis.exists(self._key("cancel", run_id))))

    def register_supervisor(
        self, name: str, instance: str, ttl: float, info: dict[str, Any] | None = None, replaces: str | None = None
    ) -> None:
        keys = [self._key("supervisor", name), self._key("supervisors")]
        result = self._run("REGISTER", keys, [_ms(ttl), instance, json.dumps(info or {}), name, replaces or ""])
        if int(result[0]) != 1:
            held_instance, held_info, beat_s, beat_us = result[1:]
            holder = SupervisorInfo(
                name, held_instance, _stamp(beat_s or 0, beat_us or 0), json.loads(held_info or "{}")
            )
            raise name_taken(name, holder, datetime.now(timezone.utc))

    def unregister_supervisor(self, name: str, instance: str) -> None:
        self._run("UNREGISTER", [self._key("supervisor", name), self._key("supervisors")], [instance, name])

    def supervisors(self) -> list[SupervisorInfo]:
        names, _ = self._live("supervisors")
        return [
            SupervisorInfo(
                name=name,
                instance=fields["instance"],
                last_heartbeat=_stamp(fields["beat_s"], fields["beat_us"]),
                info=json.loads(fields.get("info") or "{}"),
            )
            for name, fields, _ in sorted(self._hashes("supervisor", names), key=lambda item: item[0])
            if "instance" in fields
        ]

    def close(self) -> None:
        self._redis.close()

    # -- fencing and amnesia (issue 10) ---------------------------------------------------------
    def _saw(self, epoch: int) -> int:
        self._seen = max(self._seen, epoch)
        return epoch


def _space(name: str) -> str:
    return name.split(":", 1)[0]


def _claim(run_id: str, fields: dict[str, str]) -> Claim:
    started = _stamp(fields["started_s"], fields["started_us"]) if fields.get("started_s") else None
    return Claim(
        run_id=run_id,
        supervisor=fields["supervisor"],
        attempt=int(fields["attempt"]),
        claimed_at=_stamp(fields["claimed_s"], fields["claimed_us"]),
        instance=fields.get("instance", ""),
        started_at=started,
        settled=fields.get("settled") == "1",
        released=fields.get("released") == "1",
        offer=fields.get("offer") or None,
    )
