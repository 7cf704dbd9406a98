"""Partition ownership without the broker's group rebalancing: time-bound leases granted by one coordinator.

Why not Kafka's consumer-group protocol: kafka-python rebalances eagerly (every scale step stops the whole
group), and the embedded Tansu coordinator can answer SyncGroup "rebalance in progress" for many minutes after a
member leaves mid-rebalance, which leaves healthy-looking replicas owning nothing. So, like Flink's and Spark's
Kafka sources, the stream consumers never join a group: each replica `assign()`s the partitions it holds a
lease on and commits offsets to the group id without membership (OffsetCommit with no generation, which Kafka
and Tansu accept for a group that has no members). Offsets stay in Kafka, so `unison stream lag`, Kafka tooling
and a restart all read them as usual.

The leases (`LeaseTable`, pure logic) live in one Ray actor per (group, topic) (`PartitionCoordinator`,
detached, so a redeploy of the application does not reset it). Each consumer (`Ownership`) heartbeats every
`heartbeat_s` with the partitions it holds, the topic's partition count and the group's lag per partition;
the answer is the partitions it may consume now. The rules:

- a balanced, sticky assignment over the live members (at most ceil(P/M) each; a member keeps what it has);
- a partition moves only after its holder released it -- it does so at its next poll boundary, after the
  poll's offsets are committed -- or its lease expired (`lease_s` without a heartbeat: a killed replica);
- a holder none of whose lagging partitions sees a commit for `stall_after_s` is declared stalled: its leases
  are revoked (so the partitions move on) and its health check fails (so Serve replaces it);
- a consumer that cannot renew for `lease_s` stops consuming on its own (it cannot know it still owns);
- after a coordinator restart nothing is granted for one lease period except to the holders that report
  the partitions (no two owners).

At-least-once is unchanged (produce, flush, acknowledge, then commit): a handoff replays at most what was
polled and not yet committed when a holder died.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from unison.ops.logs import setup_logging

log = logging.getLogger("unison.streaming")

COORDINATOR_NAMESPACE = "unison"
COORDINATOR_PROTOCOL = 1  # part of the actor name: a new lease protocol never talks to an old coordinator


# ---------------------------------------------------------------------------------------------- the leases


@dataclass
class _Member:
    seq: int  # join order: the tie-breaker that keeps the assignment deterministic and sticky
    seen: float
    held: set[int] = field(default_factory=set)


@dataclass
class _Progress:
    committed: int | None
    since: float  # when the committed offset last moved (or the partition got its current holder)


class LeaseTable:
    """The coordinator's state and rules; `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, restarted: bool = True) -> None:
        self.clock = clock
        self.started = clock() if restarted else -math.inf  # a first start has no earlier holders to wait for
        self.members: dict[str, _Member] = {}
        self.owners: dict[int, str] = {}  # partition -> holder
        self.owned_since: dict[int, float] = {}
        self.partitions = 0
        self.lag: dict[int, int] = {}
        self.lag_at = 0.0
        self.progress: dict[int, _Progress] = {}
        self.stalled: dict[str, str] = {}  # member -> why (a stalled member gets nothing more)
        self.handoffs: dict[str, int] = {}  # reason -> count (rebalance, expired, stalled, left)
        self.lease_s = 8.0
        self.stall_after_s = 30.0
        self._seq = 0

    # ------------------------------------------------------------------------------------------ calls

    def heartbeat(self, member: str, *, partitions: int, held: list[int], lease_s: float, stall_after_s: float,
                  lag: dict[int, tuple[int | None, int]] | None = None) -> dict[str, Any]:
        """Renew `member`'s leases; returns what it may consume (`owned`) and the group's view."""
        now = self.clock()
        self.lease_s, self.stall_after_s = float(lease_s), float(stall_after_s)
        self.partitions = max(self.partitions, int(partitions))
        entry = self.members.get(member)
        if entry is None:
            self._seq += 1
            entry = self.members[member] = _Member(self._seq, now)
            log.info("member %s joined (%d live)", member, len(self.members))
        entry.seen = now
        entry.held = set(held)
        if lag is not None:
            self._observe_lag(lag, now)
        self._expire(now)
        self._adopt(member, entry, now)
        self._confirm_releases(member, entry)
        self._detect_stalls(now)
        target = self.assignment()
        if self._granting(now) and member not in self.stalled:
            for p in sorted(p for p, m in target.items() if m == member and p not in self.owners):
                self.owners[p] = member
                self.owned_since[p] = now
                self.progress.pop(p, None)  # a new holder's stall clock starts now
        owned = sorted(p for p, m in self.owners.items() if m == member and target.get(p) == member)
        return {"owned": owned, "target": sorted(p for p, m in target.items() if m == member),
                "stalled": self.stalled.get(member), **self.summary()}

    def release(self, member: str, partitions: list[int]) -> None:
        """`member` committed and stopped consuming `partitions`: they may move at once."""
        for p in partitions:
            if self.owners.get(p) == member:
                self._free(p, "rebalance")
        entry = self.members.get(member)
        if entry is not None:
            entry.held -= set(partitions)

    def leave(self, member: str) -> None:
        """`member` stopped (a graceful shutdown or a config change): everything it held moves at once."""
        for p in [p for p, m in self.owners.items() if m == member]:
            self._free(p, "left")
        self.members.pop(member, None)
        self.stalled.pop(member, None)

    # ------------------------------------------------------------------------------------------ rules

    def assignment(self) -> dict[int, str]:
        """partition -> member: balanced (ceil(P/M) at most each) and sticky (current holders keep theirs)."""
        live = sorted((m for m in self.members if m not in self.stalled), key=lambda m: self.members[m].seq)
        if not live or not self.partitions:
            return {}
        base, extra = divmod(self.partitions, len(live))
        holding = {m: sorted(p for p, o in self.owners.items() if o == m and p < self.partitions) for m in live}
        # The members holding the most keep the extra slots: fewer moves.
        by_size = sorted(live, key=lambda m: (-len(holding[m]), self.members[m].seq))
        quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_size)}
        target: dict[int, str] = {}
        for m in live:
            for p in holding[m][:quota[m]]:
                target[p] = m
        pool = [p for p in range(self.partitions) if p not in target]
        for m in live:
            have = sum(1 for holder in target.values() if holder == m)
            while have < quota[m] and pool:
                target[pool.pop(0)] = m
                have += 1
        return target

    def summary(self) -> dict[str, Any]:
        """The group's view, for status pages and metrics."""
        lagging = {p for p, lag in self.lag.items() if lag > 0}
        return {"members": len(self.members), "owners": {str(p): m for p, m in sorted(self.owners.items())},
                "partitions": self.partitions, "unowned_lagging": sorted(lagging - set(self.owners)),
                "stalled_partitions": sorted(self._stalled_partitions(self.clock())),
                "stalled_members": dict(self.stalled), "handoffs": dict(self.handoffs),
                "lease_s": self.lease_s}

    def _granting(self, now: float) -> bool:
        """After a (re)start, one lease period passes before free partitions are granted: a holder from before
        the restart either reports them (adopted) or its lease has run out by then."""
        return now - self.started >= self.lease_s

    def _adopt(self, member: str, entry: _Member, now: float) -> None:
        if self._granting(now):
            return
        for p in entry.held:
            if p not in self.owners:
                self.owners[p] = member
                self.owned_since[p] = now

    def _confirm_releases(self, member: str, entry: _Member) -> None:
        """A partition being moved away that the member no longer holds is released (its release call may
        have been lost)."""
        target = self.assignment()
        for p in [p for p, m in self.owners.items() if m == member]:
            if target.get(p) != member and p not in entry.held:
                self._free(p, "rebalance")

    def _expire(self, now: float) -> None:
        for member in [m for m, e in self.members.items() if now - e.seen > self.lease_s]:
            held = [p for p, m in self.owners.items() if m == member]
            log.warning("member %s missed its lease (%.0f s); %s move", member, self.lease_s, held or "nothing")
            for p in held:
                self._free(p, "expired")
            self.members.pop(member)
            self.stalled.pop(member, None)

    def _observe_lag(self, lag: dict[int, tuple[int | None, int]], now: float) -> None:
        self.lag_at = now
        for p, (committed, behind) in lag.items():
            p = int(p)
            self.lag[p] = int(behind)
            seen = self.progress.get(p)
            # Any change counts, a committed offset that went away or back too (a broker that lost its log):
            # the clock measures how long nothing happened.
            if seen is None or committed != seen.committed or behind <= 0:
                self.progress[p] = _Progress(committed, now)

    def _waiting_partitions(self, now: float) -> set[int]:
        """Lagging partitions whose committed offset has not moved for `stall_after_s` (from a fresh lag read)."""
        if now - self.lag_at > max(3 * self.lease_s, 10.0):
            return set()
        return {p for p, seen in self.progress.items()
                if self.lag.get(p, 0) > 0 and now - seen.since > self.stall_after_s
                and now - self.owned_since.get(p, -math.inf) > self.stall_after_s}

    def _stalled_members(self, now: float) -> dict[str, list[int]]:
        """Holders none of whose lagging partitions saw a commit for `stall_after_s` -> those partitions.

        A holder that commits on some of its partitions is working through a backlog, not stalled: the Kafka
        client hands out one partition's whole fetched chunk before the next one's (the embedded broker
        ignores `max_partition_fetch_bytes`), so under a backlog on a slow machine a partition can wait its
        turn longer than `stall_after_s` while its holder runs flat out."""
        waiting = self._waiting_partitions(now)
        found: dict[str, list[int]] = {}
        for holder in sorted({self.owners[p] for p in waiting if p in self.owners}):
            lagging = [q for q, m in sorted(self.owners.items()) if m == holder and self.lag.get(q, 0) > 0]
            if lagging and all(q in waiting for q in lagging):
                found[holder] = lagging
        return found

    def _stalled_partitions(self, now: float) -> set[int]:
        return {p for held in self._stalled_members(now).values() for p in held}

    def _detect_stalls(self, now: float) -> None:
        for holder, held in self._stalled_members(now).items():
            if holder in self.stalled:
                continue
            why = (f"partitions {held} have {sum(self.lag.get(p, 0) for p in held)} records of lag and no commit "
                   f"for {self.stall_after_s:.0f} s")
            log.warning("member %s stalled (%s); its partitions move", holder, why)
            self.stalled[holder] = why
            for q in [q for q, m in self.owners.items() if m == holder]:
                self._free(q, "stalled")

    def _free(self, partition: int, reason: str) -> None:
        self.owners.pop(partition, None)
        self.owned_since.pop(partition, None)
        self.progress.pop(partition, None)
        self.handoffs[reason] = self.handoffs.get(reason, 0) + 1


class PartitionCoordinator:
    """The Ray actor around a `LeaseTable`: one per (group, topic), named, detached. It also exports the
    group's ownership metrics (one exporter, whatever the number of replicas)."""

    def __init__(self, group: str, topic: str) -> None:
        setup_logging()
        import ray

        self.group, self.topic = group, topic
        self.table = LeaseTable(restarted=ray.get_runtime_context().was_current_actor_reconstructed)
        self._exported: dict[str, int] = {}

    def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]:
        answer = self.table.heartbeat(member, **kwargs)
        self._export(answer)
        return answer

    def release(self, member: str, partitions: list[int]) -> None:
        self.table.release(member, partitions)

    def leave(self, member: str) -> None:
        self.table.leave(member)

    def snapshot(self) -> dict[str, Any]:
        return self.table.summary()

    def _export(self, summary: dict[str, Any]) -> None:
        from unison.ops import metrics

        tags = {"group": self.group, "topic": self.topic}
        metrics.set_gauge("unison_stream_members", summary["members"], **tags)
        metrics.set_gauge("unison_stream_unowned_lagging_partitions", len(summary["unowned_lagging"]), **tags)
        metrics.set_gauge("unison_stream_stalled_partitions", len(summary["stalled_partitions"]), **tags)
        for reason, count in summary["handoffs"].items():
            metrics.inc("unison_stream_partition_handoffs_total", count - self._exported.get(reason, 0),
                        reason=reason, **tags)
            self._exported[reason] = count


def coordinator_name(group: str, topic: str) -> str:
    return f"partitions-v{COORDINATOR_PROTOCOL}:{group}:{topic}"


def ray_coordinator(group: str, topic: str) -> Coordinator:
    """The (group, topic) coordinator actor, created by the first consumer that asks. Detached and
    restartable: it outlives replicas and redeploys; a restart loses only leases, which the grace period
    covers."""
    import ray

    actor = ray.remote(PartitionCoordinator).options(  # type: ignore[attr-defined]
        name=coordinator_name(group, topic), namespace=COORDINATOR_NAMESPACE, lifetime="detached",
        get_if_exists=True, num_cpus=0, max_restarts=-1).remote(group, topic)
    return _RayCoordinator(actor)


class Coordinator(Protocol):
    def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]: ...

    def release(self, member: str, partitions: list[int]) -> None: ...

    def leave(self, member: str) -> None: ...


class _RayCoordinator:
    """Blocking calls with a bound: a coordinator that does not answer counts as a missed heartbeat."""

    def __init__(self, actor: Any, timeout_s: float = 5.0) -> None:
        self.actor, self.timeout_s = actor, timeout_s

    def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.heartbeat.remote(member, **kwargs), timeout=self.timeout_s)  # type: ignore[no-any-return]

    def release(self, member: str, partitions: list[int]) -> None:
        import ray

        ray.get(self.actor.release.remote(member, partitions), timeout=self.timeout_s)

    def leave(self, member: str) -> None:
        import ray

        ray.get(self.actor.leave.remote(member), timeout=self.timeout_s)


# ---------------------------------------------------------------------------------------------- a member


LagSource = Callable[[], dict[int, tuple[int | None, int]] | None]


class Ownership:
    """A consumer's side: a thread that renews its leases every `heartbeat_s`, and the partitions its loop may
    consume now (`wanted`). The loop re-assigns at poll boundaries and reports what it holds (`holding`)."""

    def __init__(self, coordinator: Callable[[], Coordinator], name: str, *, heartbeat_s: float, lease_s: float,
                 stall_after_s: float, max_poll_interval_s: float, partitions: Callable[[], int],
                 lag: LagSource) -> None:
        self.member = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"  # the pid: an operator can find it
        self._factory = coordinator
        self._coordinator: Coordinator | None = None
        self.heartbeat_s, self.lease_s, self.stall_after_s = heartbeat_s, lease_s, stall_after_s
        self.max_poll_interval_s = max_poll_interval_s
        self._partitions, self._lag = partitions, lag
        self._wanted: set[int] = set()
        self._held: set[int] = set()
        self.changed = threading.Event()  # set when `wanted` changes: an idle loop wakes at once
        self.answer: dict[str, Any] = {}  # the coordinator's last answer
        self.last_renewed = 0.0
        self.last_loop = time.monotonic()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="unison-ownership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give everything back (the loop has committed and closed its consumer)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.heartbeat_s + 10)
        try:
            self._client().leave(self.member)
        except Exception as exc:  # the coordinator is away: the lease runs out by itself
            log.warning("could not leave (%s); the lease expires in %.0f s", exc, self.lease_s)

    # ------------------------------------------------------------------------------------------ the loop's side

    def wanted(self) -> set[int]:
        with self._lock:
            self.changed.clear()
            return set(self._wanted)

    def holding(self, partitions: set[int]) -> None:
        """The loop's consumer is now assigned exactly `partitions`; the ones it dropped are committed and
        released to the coordinator at once (the next heartbeat would also tell it)."""
        with self._lock:
            released = self._held - partitions
            self._held = set(partitions)
        if released:
            try:
                self._client().release(self.member, sorted(released))
            except Exception:  # the next heartbeat reports the smaller set: the release still happens
                log.debug("release call failed", exc_info=True)

    def loop_alive(self) -> None:
        """The loop went round (polled, or backed off after an error): its leases may be renewed."""
        self.last_loop = time.monotonic()

    def loop_hung(self) -> str | None:
        """Why the consumer loop counts as hung (it has not gone round for `max_poll_interval_s`), or None."""
        idle = time.monotonic() - self.last_loop
        if idle > self.max_poll_interval_s:
            return f"the consumer loop has not gone round for {idle:.0f} s"
        return None

    @property
    def stalled(self) -> str | None:
        why = self.answer.get("stalled")
        return str(why) if why else None

    def status(self) -> dict[str, Any]:
        answer = self.answer
        return {"member": self.member, "owned": sorted(self._held), "granted": answer.get("owned", []),
                "target": answer.get("target", []), "members": answer.get("members"),
                "owners": answer.get("owners", {}), "unowned_lagging": answer.get("unowned_lagging", []),
                "stalled_partitions": answer.get("stalled_partitions", []), "stalled": self.stalled,
                "handoffs": answer.get("handoffs", {}),
                "seconds_since_renewal": round(time.monotonic() - self.last_renewed, 1) if self.last_renewed
                else None, "error": self.error}

    # ------------------------------------------------------------------------------------------ heartbeats

    def _client(self) -> Coordinator:
        if self._coordinator is None:
            self._coordinator = self._factory()
        return self._coordinator

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.heartbeat_s)

    def beat(self) -> None:
        """One heartbeat. A loop that has not gone round for `max_poll_interval_s` is hung: its leases are
        left to expire so the partitions move. A consumer that cannot renew for most of a lease stops
        consuming: past the lease, another member may hold its partitions."""
        now = time.monotonic()
        hung = self.loop_hung()
        if hung:
            self.error = hung
            self._set_wanted(set())
            return
        try:
            with self._lock:
                held = sorted(self._held)
            answer = self._client().heartbeat(self.member, partitions=self._partitions(), held=held,
                                              lease_s=self.lease_s, stall_after_s=self.stall_after_s,
                                              lag=self._lag())
        except Exception as exc:
            self.error = f"coordinator: {type(exc).__name__}: {exc}"
            self._coordinator = None  # ask for the actor again (it may have been restarted elsewhere)
            if self.last_renewed and time.monotonic() - self.last_renewed > 0.75 * self.lease_s:
                self._set_wanted(set())
            return
        self.error = None
        self.last_renewed = now
        self.answer = answer
        self._set_wanted(set(answer["owned"]))

    def _set_wanted(self, partitions: set[int]) -> None:
        with self._lock:
            if partitions != self._wanted:
                self._wanted = partitions
                self.changed.set()
