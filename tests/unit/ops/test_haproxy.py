"""The HAProxy wrapper of the embedded stack, run for real by `sh` in front of a stand-in binary: it rebinds the
stats and metrics listeners to loopback, keeps the frontend's address, and passes every argument on."""

import subprocess
from pathlib import Path

import pytest

from unison.config import ServeRuntime
from unison.ops import haproxy

CONFIG = """global
frontend prometheus
    bind :19101
    mode http
frontend http_frontend
    bind *:8000
listen stats
  bind *:18404
  stats enable
"""


def test_the_wrapper_rebinds_stats_and_metrics_to_loopback_and_execs_the_binary(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "args: $*"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(haproxy, "real_binary", lambda: str(fake))
    env = haproxy.environment(tmp_path, stats_port=18404, metrics_port=19101)
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    assert wrapper.stat().st_mode & 0o777 == 0o700
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    out = subprocess.run([str(wrapper), "-db", "-f", str(config), "-sf", "123"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"args: -db -f {config} -sf 123"
    rewritten = config.read_text()
    assert "bind 127.0.0.1:19101" in rewritten and "bind 127.0.0.1:18404" in rewritten
    assert "bind *:8000" in rewritten  # the frontend keeps serving.http_host: an explicit choice
    assert rewritten.replace("127.0.0.1:19101", ":19101").replace("127.0.0.1:18404", "*:18404") == CONFIG


def test_serve_runtime_flags_are_explicit_both_ways() -> None:
    assert ServeRuntime().environment() == {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    previous = ServeRuntime(proxy="python", throughput_optimized=False).environment()
    assert previous == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    with pytest.raises(ValueError):
        ServeRuntime(proxy="nginx")  # type: ignore[arg-type]
