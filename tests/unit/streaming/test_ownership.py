"""The partition lease rules (pure logic, a fake clock) and a consumer's side of them."""

from typing import Any

import pytest
from tests.unit.fakes import LocalCoordinator

from unison.streaming.ownership import LeaseTable, Ownership

LEASE, STALL = 8.0, 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> LeaseTable:
    table = LeaseTable(clock)
    clock.now += LEASE  # past the start-up grace period
    return table


def beat(table: LeaseTable, member: str, held: list[int] | None = None, partitions: int = 4,
         lag: dict[int, tuple[int | None, int]] | None = None) -> dict[str, Any]:
    return table.heartbeat(member, partitions=partitions, held=held or [], lease_s=LEASE, stall_after_s=STALL,
                           lag=lag)


def test_a_lone_member_gets_every_partition(table: LeaseTable) -> None:
    assert beat(table, "a")["owned"] == [0, 1, 2, 3]


def test_a_partition_moves_only_after_its_holder_released_it(table: LeaseTable) -> None:
    beat(table, "a")
    joined = beat(table, "b")
    assert joined["target"] == [2, 3] and joined["owned"] == []  # balanced target, nothing granted yet
    asked = beat(table, "a", held=[0, 1, 2, 3])
    assert asked["owned"] == [0, 1]  # a must stop consuming 2 and 3
    assert beat(table, "b")["owned"] == []  # still a's until released
    table.release("a", [2, 3])
    assert beat(table, "b")["owned"] == [2, 3]
    assert table.handoffs == {"rebalance": 2}


def test_a_release_is_also_seen_in_the_next_heartbeat(table: LeaseTable) -> None:
    beat(table, "a")
    beat(table, "b")
    beat(table, "a", held=[0, 1])  # the release call was lost; a reports it no longer holds 2 and 3
    assert beat(table, "b")["owned"] == [2, 3]


def test_a_killed_member_loses_its_partitions_after_the_lease(table: LeaseTable, clock: Clock) -> None:
    beat(table, "a")
    beat(table, "b")
    beat(table, "a", held=[0, 1, 2, 3])
    table.release("a", [2, 3])
    beat(table, "b", held=[2, 3])
    for _ in range(int(LEASE) - 1):  # a is SIGKILLed: only b renews
        clock.now += 1
        assert beat(table, "b", held=[2, 3])["owned"] == [2, 3]
    clock.now += 2
    assert beat(table, "b", held=[2, 3])["owned"] == [0, 1, 2, 3]
    assert table.handoffs["expired"] == 2


def test_leaving_hands_over_at_once(table: LeaseTable) -> None:
    beat(table, "a")
    beat(table, "b")
    beat(table, "a", held=[0, 1, 2, 3])
    table.release("a", [2, 3])
    beat(table, "b", held=[2, 3])
    table.leave("a")
    assert beat(table, "b", held=[2, 3])["owned"] == [0, 1, 2, 3]


def test_the_assignment_is_balanced_sticky_and_never_gives_a_partition_twice(table: LeaseTable) -> None:
    members = ["a", "b", "c", "d", "e"]
    for member in members:
        beat(table, member)
    target = table.assignment()
    assert sorted(target) == [0, 1, 2, 3]  # four partitions, five members: one idle
    counts = [list(target.values()).count(m) for m in members]
    assert sorted(counts) == [0, 1, 1, 1, 1]
    assert target[0] == "a"  # a held everything first and keeps what its quota allows
    owners = list(table.owners.items())
    assert len({p for p, _ in owners}) == len(owners)


def test_more_partitions_split_within_one(table: LeaseTable) -> None:
    for member in ("a", "b", "c"):
        beat(table, member, partitions=8)
    counts = sorted(list(table.assignment().values()).count(m) for m in ("a", "b", "c"))
    assert counts == [2, 3, 3]


def test_a_holder_whose_lagging_partitions_see_no_commit_is_stalled(table: LeaseTable, clock: Clock) -> None:
    beat(table, "a")
    beat(table, "b")
    beat(table, "a", held=[0, 1])
    table.release("a", [2, 3])
    beat(table, "b", held=[2, 3])
    lag = {0: (10, 5), 1: (10, 0), 2: (3, 50), 3: (7, 0)}  # b's partition 2 lags and never moves
    for second in range(int(STALL) + 2):
        clock.now += 1
        lag[0] = (10 + second, 5)  # a keeps committing
        beat(table, "a", held=[0, 1], lag=lag)
        answer = beat(table, "b", held=[2, 3], lag=lag)
    assert answer["stalled"] and "partitions [2] have 50 records" in answer["stalled"]
    assert answer["owned"] == []  # its leases were revoked (the stall clock restarts with the next holder)
    assert beat(table, "a", held=[0, 1], lag=lag)["owned"] == [0, 1, 2, 3]  # moved to the live member
    assert table.handoffs["stalled"] == 2


def test_a_holder_working_through_a_backlog_one_partition_at_a_time_is_not_stalled(table: LeaseTable,
                                                                                  clock: Clock) -> None:
    # The client hands out one partition's fetched chunk before the next: partition 1 waits its turn longer than
    # stall_after_s while its holder commits on partition 0 all along.
    lag = {0: (0, 900), 1: (0, 900)}
    for second in range(int(STALL) * 2):
        clock.now += 1
        lag[0] = (second * 10, 900 - second * 10)
        answer = beat(table, "a", held=[0, 1], partitions=2, lag=lag)
    assert answer["stalled"] is None and answer["owned"] == [0, 1]
    assert table.summary()["stalled_partitions"] == []
    for _ in range(int(STALL) + 2):  # then nothing moves on either: stalled
        clock.now += 1
        answer = beat(table, "a", held=[0, 1], partitions=2, lag=lag)
    assert answer["stalled"] and "partitions [0, 1]" in answer["stalled"]


def test_a_caught_up_partition_is_never_stalled(table: LeaseTable, clock: Clock) -> None:
    for _ in range(int(STALL) * 2):
        clock.now += 1
        answer = beat(table, "a", held=[0, 1, 2, 3], lag={p: (5, 0) for p in range(4)})
    assert answer["stalled"] is None and answer["owned"] == [0, 1, 2, 3]


def test_lagging_partitions_nobody_holds_are_reported(table: LeaseTable) -> None:
    beat(table, "a", lag={0: (None, 9), 1: (None, 0), 2: (None, 0), 3: (None, 0)})
    table.release("a", [0])  # e.g. on the way to another member that has not picked it up
    assert table.summary()["unowned_lagging"] == [0]


def test_after_a_restart_only_reported_holders_get_partitions_for_one_lease(clock: Clock) -> None:
    table = LeaseTable(clock)  # a new coordinator; "a" held 0 and 1 before it restarted
    assert beat(table, "b")["owned"] == []
    assert beat(table, "a", held=[0, 1])["owned"] == [0, 1]  # adopted
    clock.now += LEASE
    assert beat(table, "b")["owned"] == [2, 3]


def test_a_first_start_grants_at_once(clock: Clock) -> None:
    assert beat(LeaseTable(clock, restarted=False), "a")["owned"] == [0, 1, 2, 3]


def test_leases_must_outlive_heartbeats_and_stalls_must_outlive_leases() -> None:
    from unison.streaming.tickets import StreamConfig

    with pytest.raises(ValueError, match="at least 3 heartbeats"):
        StreamConfig(heartbeat_s=2, lease_s=5)
    with pytest.raises(ValueError, match="must exceed lease_s"):
        StreamConfig(lease_s=10, stall_after_s=10)


def test_a_consumer_stops_consuming_when_it_cannot_renew(table: LeaseTable) -> None:
    class Flaky(LocalCoordinator):
        up = True

        def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]:
            if not self.up:
                raise ConnectionError("coordinator away")
            return super().heartbeat(member, **kwargs)

    coordinator = Flaky(table)
    own = Ownership(lambda: coordinator, "t", heartbeat_s=0.01, lease_s=0.3, stall_after_s=1.0,
                    max_poll_interval_s=60, partitions=lambda: 2, lag=lambda: None)
    own.beat()
    assert own.wanted() == {0, 1}
    coordinator.up = False
    own.beat()
    assert own.wanted() == {0, 1}  # one missed heartbeat: still within the lease
    own.last_renewed -= 1.0  # most of a lease without renewal
    own.beat()
    assert own.wanted() == set() and "coordinator away" in (own.error or "")


def test_a_hung_loop_lets_its_leases_expire() -> None:
    own = Ownership(lambda: LocalCoordinator(), "t", heartbeat_s=0.01, lease_s=0.3, stall_after_s=1.0,
                    max_poll_interval_s=5, partitions=lambda: 2, lag=lambda: None)
    assert own.loop_hung() is None
    own.last_loop -= 10
    own.beat()
    assert own.wanted() == set() and "has not gone round" in (own.error or "")
    assert own.loop_hung() == own.error  # what the replica's health check reports
