"""The lag-based autoscaling policy: replicas from lag, bounds, partition cap, and the delays against flapping."""

from types import SimpleNamespace
from typing import Any

import pytest
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig

from unison.streaming.autoscaling import LagPolicy, wanted_replicas


@pytest.mark.parametrize(("lag", "expected"), [(0, 1), (1, 1), (1000, 1), (1001, 2), (2500, 3), (10**9, 4)])
def test_replicas_follow_lag_within_bounds(lag: float, expected: int) -> None:
    assert wanted_replicas(lag, 1000, min_replicas=1, max_replicas=8, partitions=4) == expected


def test_never_more_replicas_than_partitions_nor_fewer_than_min() -> None:
    assert wanted_replicas(10**6, 10, min_replicas=1, max_replicas=8, partitions=2) == 2
    assert wanted_replicas(10**6, 10, min_replicas=1, max_replicas=3, partitions=None) == 3
    assert wanted_replicas(0, 10, min_replicas=2, max_replicas=8, partitions=1) == 2  # min wins over the cap


def _context(lags: dict[str, float], partitions: float = 4, target: int = 1, now: float = 0.0,
             state: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(
        deployment_name="StreamConsumer", running_replicas=list(lags), target_num_replicas=target,
        policy_state=state or {}, current_time=now,
        aggregated_metrics={"lag": lags, "partitions": {r: partitions for r in lags}} if lags else {},
        capacity_adjusted_min_replicas=1, capacity_adjusted_max_replicas=3,
        current_num_replicas=target, total_num_requests=0.0,
        config=AutoscalingConfig(min_replicas=1, max_replicas=3, upscale_delay_s=5, downscale_delay_s=30),
    )


def test_policy_reads_the_largest_reported_lag_and_caps_at_max() -> None:
    policy = LagPolicy(target_lag_per_replica=100)
    target, state = policy(_context({"r1": 50.0, "r2": 450.0}))
    assert target == 3 and state["lag"] == 450.0 and state["wanted"] == 3


def test_policy_holds_without_reports() -> None:
    policy = LagPolicy(target_lag_per_replica=100)
    assert policy(_context({}, target=2))[0] == 2


def test_policy_wants_min_once_the_backlog_is_gone() -> None:
    assert LagPolicy(target_lag_per_replica=100)(_context({"r1": 0.0}, target=3))[0] == 1


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_as_the_controller_runs_it_up_and_down_wait_for_their_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve wraps a custom policy with its delay logic (wall clock); the policy must not fight it."""
    import ray.serve.autoscaling_policy as serve_policy

    clock = _Clock()
    monkeypatch.setattr(serve_policy.time, "time", clock)
    policy = _apply_autoscaling_config(LagPolicy(target_lag_per_replica=100))
    state: dict[str, Any] = {}
    decisions, target = [], 1
    for _ in range(7):  # a backlog that needs 3 replicas, for 6 s (upscale delay 5 s)
        target, state = policy(_context({"r1": 1000.0}, target=target, state=state))
        decisions.append(target)
        clock.now += 1.0
    assert decisions == [1, 1, 1, 1, 1, 3, 3]
    target, state = policy(_context({"r1": 0.0}, target=3, state=state))  # drained: down waits 30 s
    assert target == 3
    clock.now += 10
    target, state = policy(_context({"r1": 500.0}, target=3, state=state))  # a blip of backlog restarts it
    clock.now += 25
    target, state = policy(_context({"r1": 0.0}, target=3, state=state))
    assert target == 3
    clock.now += 30
    target, state = policy(_context({"r1": 0.0}, target=3, state=state))
    assert target == 1


def test_policy_rejects_a_nonpositive_target() -> None:
    with pytest.raises(ValueError, match="target_lag_per_replica"):
        LagPolicy(target_lag_per_replica=0)
