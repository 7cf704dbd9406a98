"""The `DriftMonitor` deployment: one replica that sums the drift counts of every online and streaming replica.

Replicas count what they score into the training reference's bins (`unison.model.drift.DriftRecorder`) and send
the counts here every few seconds. Each replica alone sees only its share of the traffic, so PSI is computed
here, over all of them: per model version and path, over a sliding window, every `interval_s`. The figures go
to the `unison_feature_drift_psi{model,path,input}` gauge (Ray's metrics export; Prometheus reads it as
`ray_unison_feature_drift_psi`), to `GET /v1/drift` and to `unison status`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from unison.config import Settings, load_settings
from unison.model.drift import DriftConfig, DriftWindow, assess
from unison.ops import metrics
from unison.ops.logs import setup_logging

log = logging.getLogger("unison.drift")
Series = tuple[str, tuple[tuple[str, str], ...]]  # one gauge series: metric name, sorted tags


class DriftMonitor:
    """A Serve deployment class (decorated in `unison.serving.app`)."""

    def __init__(self) -> None:
        from unison.model import Registry

        setup_logging()
        self.settings: Settings = load_settings()
        self.registry = Registry(self.settings.model.registry_dir)
        self.config = DriftConfig()
        self.windows: dict[tuple[str, str], DriftWindow] = {}
        self.references: dict[str, dict[str, Any]] = {}
        self.latest: dict[str, Any] = {"computed_at": None, "models": []}
        self.parity: dict[str, Any] | None = None
        self._parity_file = self.settings.state_dir / "parity" / "received.json"
        self._load_parity()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._exported: set[Series] = set()  # the gauge series the last check set
        self._thread = threading.Thread(target=self._run, name="unison-drift-monitor", daemon=True)
        self._thread.start()

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.config = DriftConfig.model_validate(config or {})
        self._wake.set()  # a new interval applies now, not after the old one ends

    def observe(self, model: str, path: str, rows: int, counts: dict[str, list[int]]) -> None:
        """Counts of `rows` rows that `path` scored with `model` ("name:version") since its last call."""
        with self._lock:
            self.windows.setdefault((model, path), DriftWindow()).add(time.time(), rows, counts)

    def report(self) -> dict[str, Any]:
        """The last scheduled computation: per model and path, rows in the window, status and PSI per input;
        and the last parity check recorded here."""
        parity = None
        if self.parity is not None:
            parity = {**self.parity, "age_s": round(time.time() - self.parity["received_at"], 1)}
        return {**self.latest, "config": self.config.model_dump(), "parity": parity}

    def record_parity(self, report: dict[str, Any], received_at: float | None = None) -> dict[str, Any]:
        """Keep the last `unison parity` result, export it (`unison_parity_*`) and keep a copy in the state
        directory, so a redeployed monitor still knows it."""
        pairs = {pair: int(sum(values.get("mismatches", {}).values())) for pair, values in report["pairs"].items()}
        now = received_at or time.time()
        self.parity = {"ok": bool(report["ok"]), "tickets": int(report["tickets"]), "pairs": pairs,
                       "problems": list(report["problems"])[:20], "snapshot": report.get("snapshot"),
                       "received_at": now}
        metrics.set_gauge("unison_parity_ok", 1.0 if report["ok"] else 0.0)
        metrics.set_gauge("unison_parity_last_run_timestamp_seconds", now)
        for pair, count in pairs.items():
            metrics.set_gauge("unison_parity_mismatches", count, pair=pair)
        if received_at is None:
            try:
                self._parity_file.parent.mkdir(parents=True, exist_ok=True)
                self._parity_file.write_text(json.dumps({"received_at": now, "report": report}))
            except OSError:
                log.warning("could not keep the parity result in %s", self._parity_file, exc_info=True)
        return {"recorded": True}

    def _load_parity(self) -> None:
        try:
            kept = json.loads(self._parity_file.read_text())
            self.record_parity(kept["report"], received_at=float(kept["received_at"]))
        except FileNotFoundError:
            return
        except Exception:  # a damaged copy: start without it
            log.warning("ignoring %s", self._parity_file, exc_info=True)

    def check(self) -> dict[str, Any]:
        """Compute PSI now over every window, export it, and keep it as the latest report."""
        now = time.time()
        with self._lock:
            totals = {key: window.total(now, self.config.window_s) for key, window in self.windows.items()}
        models = []
        exported: set[Series] = set()
        for (model, path), (rows, counts) in sorted(totals.items()):
            reference = self._reference(model)
            if reference is None:
                continue
            result = assess(reference, rows, counts, self.config)
            models.append({"model": model, "path": path, **result})
            exported |= self._export(model, path, result)
        for name, tags in self._exported - exported:  # a figure that is gone (too few rows now): no longer held
            metrics.clear_gauge(name, **dict(tags))
        self._exported = exported
        self.latest = {"computed_at": now, "models": models}
        return self.report()

    def _reference(self, model: str) -> dict[str, Any] | None:
        if model not in self.references:
            try:
                self.references[model] = dict(self.registry.manifest(model).training_reference)
            except Exception as exc:  # the version left the registry: its counts cannot be read
                log.warning("no training reference for %s: %s", model, exc)
                return None
        return self.references[model]

    def _export(self, model: str, path: str, result: dict[str, Any]) -> set[Series]:
        """Set one window's gauges (held between checks: `metrics.set_gauge`); the series it set."""
        gauges = [("unison_feature_drift_window_rows", result["rows"], {"model": model, "path": path})]
        gauges += [("unison_feature_drift_psi", value, {"model": model, "path": path, "input": name})
                   for name, value in result["psi"].items()]
        for name, value, tags in gauges:
            metrics.set_gauge(name, value, **tags)
        return {(name, tuple(sorted(tags.items()))) for name, _, tags in gauges}

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.interval_s)
            self._wake.clear()
            try:
                self.check()
            except Exception:
                log.exception("drift check failed; retried next interval")
