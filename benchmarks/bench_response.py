"""The cost of the typed /v1 response: Prediction records from the data plane, pickled over the Serve handle,
checked into `PredictResponse` and encoded by pydantic, against the plain dicts and `json.dumps` it replaced.

    .venv/bin/python benchmarks/bench_response.py

Both ways are run in alternating blocks in one process (no servers): the handle hop is modelled by a pickle round
trip, which is what Ray does to a handle call's result. Prints per-request microseconds and the ratio typed/plain
(medians of the blocks) for 1, 8 and 64 tickets per request, to read against the request's model time (milliseconds
per ticket on CPU).
"""

from __future__ import annotations

import json
import pickle
import re
import statistics
import time
from pathlib import Path
from typing import Any

LABELS = ["billing", "technical", "account", "shipping", "cancellation", "other"]


def _record(i: int) -> dict[str, Any]:
    return {"ticket_id": f"t{i}", "customer_id": i, "category": "billing",
            "probabilities": {label: 1 / 6 for label in LABELS}, "priority": 0.4, "features_missing": False,
            "tokens": 30, "truncated": False, "input_digest": "0123456789abcdef"}


def _result(predictions: list[Any]) -> dict[str, Any]:
    return {"model_name": "triage", "model_version": "1", "variant": "int8", "feature_service": "triage_v1",
            "predictions": predictions, "model_cache": "hit",
            "latency_ms": {"queue": 1.0, "model": 2.0, "load": 0.0, "total": 3.0}}


def main() -> int:
    from unison.model.scoring import Prediction
    from unison.serving.schema import PredictResponse

    def plain(n: int) -> bytes:
        wire = pickle.loads(pickle.dumps(_result([_record(i) for i in range(n)])))
        return json.dumps(wire, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def typed(n: int) -> bytes:
        wire = pickle.loads(pickle.dumps(_result([Prediction.model_construct(**_record(i)) for i in range(n)])))
        return PredictResponse(**wire).model_dump_json().encode()

    assert json.loads(plain(3)) == json.loads(typed(3))  # the same document either way
    flags = sorted(set(re.findall(r"avx512[a-z_]*|avx2", Path("/proc/cpuinfo").read_text())))
    print(f"CPU flags: {' '.join(flags) or 'unknown'}")
    for n in (1, 8, 64):
        plain_us, typed_us, ratios = [], [], []
        for _ in range(15):
            started = time.perf_counter()
            for _ in range(200):
                plain(n)
            a = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(200):
                typed(n)
            b = time.perf_counter() - started
            plain_us.append(a / 200 * 1e6)
            typed_us.append(b / 200 * 1e6)
            ratios.append(b / a)
        print(f"{n:3d} tickets/request: plain {statistics.median(plain_us):7.1f} us, typed "
              f"{statistics.median(typed_us):7.1f} us, typed/plain {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
