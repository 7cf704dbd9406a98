"""Lag-based autoscaling for the streaming deployment: a custom Serve autoscaling policy.

Serve scales on HTTP load out of the box; a Kafka consumer's load is its backlog. Each streaming replica reports
its consumer group's lag through `record_autoscaling_stats` (`lag`, and the input topic's `partitions`), and
`LagPolicy` -- named in the deployment's `autoscaling_config.policy` in deploy/serve.yaml -- turns it into a
replica count the way KEDA's Kafka scaler does: enough replicas that each carries at most `target_lag_per_replica`
records of backlog, never more replicas than partitions (an extra group member would sit idle), within the
deployment's min/max. Serve wraps every custom policy with its own delay logic, so a change is made only after
it has pointed the same way for `upscale_delay_s` (up) or `downscale_delay_s` (down) of wall-clock time, and a
blip the other way restarts the clock: a short spike or a momentary drain does not make the deployment flap
(the policy must not delay again itself, or the two clocks reset each other and it never scales). The
controller runs the policy; Serve ships it there by value, so nothing here may import more than the standard
library at module level.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("ray.serve")  # the controller's log, next to Serve's own scaling lines


def wanted_replicas(lag: float, target_lag_per_replica: float, min_replicas: int, max_replicas: int,
                    partitions: int | None) -> int:
    """Replicas for `lag` records of backlog: ceil(lag / target), within [min, min(max, partitions)]."""
    upper = max_replicas if not partitions else min(max_replicas, partitions)
    upper = max(upper, min_replicas)
    return max(min_replicas, min(upper, math.ceil(lag / target_lag_per_replica)))


class LagPolicy:
    """`autoscaling_config.policy.policy_function: unison.streaming.autoscaling:LagPolicy`; `policy_kwargs` are
    this constructor's arguments."""

    def __init__(self, target_lag_per_replica: float = 500.0) -> None:
        if target_lag_per_replica <= 0:
            raise ValueError("target_lag_per_replica must be > 0")
        self.target_lag_per_replica = float(target_lag_per_replica)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """`ctx` is Serve's AutoscalingContext; returns (wanted replicas, policy state)."""
        current = int(ctx.target_num_replicas)
        state = dict(ctx.policy_state or {})
        metrics = ctx.aggregated_metrics or {}
        lags = [v for v in (metrics.get("lag") or {}).values() if v is not None and v >= 0]
        if not lags:  # no replica has read the lag yet (starting, or the broker is away): hold
            if state.get("reports") != 0:
                log.info("LagPolicy %s: no lag reported by %d replica(s); holding %d replica(s)",
                         ctx.deployment_name, len(ctx.running_replicas or []), current)
            state["reports"] = 0
            return current, state
        # Every replica reads the same group's lag; the largest is the most recent view of a growing backlog.
        lag = max(lags)
        partitions = max((int(v) for v in (metrics.get("partitions") or {}).values() if v), default=None)
        wanted = wanted_replicas(lag, self.target_lag_per_replica, int(ctx.capacity_adjusted_min_replicas),
                                 int(ctx.capacity_adjusted_max_replicas), partitions)
        if wanted != state.get("wanted") or state.get("reports") == 0:
            log.info("LagPolicy %s: lag %.0f (max of %d report(s)), %s partition(s) -> wants %d replica(s), "
                     "has %d", ctx.deployment_name, lag, len(lags), partitions, wanted, current)
        state.update(lag=lag, wanted=wanted, partitions=partitions, reports=len(lags))
        return wanted, state  # Serve applies upscale_delay_s / downscale_delay_s to this
