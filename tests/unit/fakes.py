"""Stand-ins for the online store, the Predictor and the partition coordinator in unit tests of pure logic (the
scoring shells' error isolation, a consumer's own loop); the real ones are exercised by the integration tests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

from unison.streaming.ownership import LeaseTable


class FakeFeatures:
    """The online store's shape: one row of (missing) customer features per id."""

    down = False

    def online(self, ids: list[int]) -> pd.DataFrame:
        import numpy as np

        from unison.features.transform import CUSTOMER_FEATURES

        if self.down:
            raise ConnectionError("online store unreachable")
        return pd.DataFrame({"customer_id": ids, **{c: [np.nan] * len(ids) for c in CUSTOMER_FEATURES}})


class FakeScorer:
    """Raises on a text that contains "boom" (a failure the edge could not foresee), scores the others."""

    name, version = "triage", "1"

    def close(self) -> None:
        pass

    def predict(self, texts: list[str], features: object) -> object:
        import numpy as np

        from unison.model.predictor import Predictions

        if any("boom" in t for t in texts):
            raise OverflowError("Python int too large to convert to C long")
        n = len(texts)
        outputs = {"probabilities": np.full((n, 2), 0.5, np.float32), "priority": np.zeros(n, np.float32)}
        return Predictions("triage", "1", "int8", ["a", "b"], outputs, np.ones(n, np.int64), np.zeros(n, bool),
                           "rows", "cpu")


class LocalCoordinator:
    """A `LeaseTable` in this process, behind a lock: the partition coordinator of consumers that all run in the
    test's process (the real one is a Ray actor, `unison.streaming.ownership.PartitionCoordinator`)."""

    def __init__(self, table: LeaseTable | None = None) -> None:
        self.table = table or LeaseTable()
        self._lock = threading.Lock()

    def heartbeat(self, member: str, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            return self.table.heartbeat(member, **kwargs)

    def release(self, member: str, partitions: list[int]) -> None:
        with self._lock:
            self.table.release(member, partitions)

    def leave(self, member: str) -> None:
        with self._lock:
            self.table.leave(member)


@contextlib.contextmanager
def json_server(routes: dict[str, tuple[int, Any]]) -> Iterator[str]:
    """A real HTTP server on a free loopback port (a stand-in for the Serve proxy or Ray's dashboard): GET `path`
    answers `routes[path]` = (status, body), read at each request, the body JSON-encoded unless it is a str;
    any other path 404. Yields its base URL; `routes` is cleared afterwards."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, {"error": "not found"}))
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        routes.clear()


def skeleton_registry(root: Any) -> Any:
    """A registry of empty version directories (no artifacts): triage 1-3 with production->2 and staging->3, spam
    1 without aliases; enough for alias and version resolution."""
    from unison.model import Registry

    for name, versions in (("triage", ["1", "2", "3"]), ("spam", ["1"])):
        for version in versions:
            (root / name / version).mkdir(parents=True)
    (root / "triage" / "aliases.json").write_text(json.dumps({"production": "2", "staging": "3"}))
    return Registry(root)
