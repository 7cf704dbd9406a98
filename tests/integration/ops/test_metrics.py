"""Gauges on a real Ray node's metrics port: a value set once stays exported while its process lives.

Ray's metrics agent drops a gauge series its process has not recorded for two export intervals; a gauge set
with `ray.util.metrics` directly shows that (the control), `unison.ops.metrics.set_gauge` must not."""

import time
import uuid
from typing import Any

import httpx

from unison.config import Settings
from unison.ops import stack

DRIVER = """
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
class Setter:
    def __init__(self, run):
        from ray.util.metrics import Gauge
        from unison.ops import metrics
        self.raw = Gauge("unison_test_raw_gauge", "control", tag_keys=("run",))
        self.raw.set(1.0, tags={"run": run})
        metrics.set_gauge("unison_parity_ok", 1.0)  # once, as a parity result is
        metrics.set_gauge("unison_model_cache_bytes", 12345.0, replica=run)

    def ready(self):
        return True

setter = Setter.remote(sys.argv[2])
ray.get(setter.ready.remote())
print("ready", flush=True)
sys.stdin.read()  # the actor lives until the test closes stdin
"""


def test_a_gauge_set_once_is_still_exported_after_ray_would_have_dropped_it(stack_settings: Settings,
                                                                           ray_driver: Any) -> None:
    port = stack.load_state(stack_settings).components[stack.RAY].ports["metrics_export"]
    run = uuid.uuid4().hex[:8]
    with ray_driver(DRIVER, run) as ready:
        assert ready == "ready"

        def exported(body: str, name: str, label: str) -> bool:  # Ray puts its own labels first
            return any(line.startswith(f"{name}{{") and label in line for line in body.splitlines())

        seen_raw = False
        deadline = time.monotonic() + 300
        while True:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            raw = exported(body, "ray_unison_test_raw_gauge", f'run="{run}"')
            seen_raw = seen_raw or raw
            if seen_raw and not raw:  # the control has aged out of Ray's agent
                break
            assert time.monotonic() < deadline, (f"the control gauge {'never left' if seen_raw else 'never came'}: "
                                                 + "\n".join(line for line in body.splitlines() if run in line))
            time.sleep(1)
        assert exported(body, "ray_unison_model_cache_bytes", f'replica="{run}"'), "a held gauge was dropped"
        assert exported(body, "ray_unison_parity_ok", ""), "a held gauge was dropped"
