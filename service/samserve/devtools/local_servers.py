"""Local `redis-server` and `tritonserver` processes: what `samserve serve` starts for the
embedded default (SAMSERVE_EMBEDDED) and the servers the test suite starts. Loopback only,
free ports, own process groups; each is sent SIGTERM when the thread that started it dies,
however it dies (kill -9, the OOM killer, a native crash), so none is left holding its port.
`samserve serve` also records what it runs (`record_servers`, embedded_registry), so that a
start finds, reports and stops any server an earlier one left behind all the same."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from samserve.devtools.embedded_registry import server_record, write_record

log = logging.getLogger(__name__)


def _dies_with_parent() -> list[str]:
    """A command prefix: util-linux's `setpriv` sets PR_SET_PDEATHSIG (SIGTERM when the thread
    that started the child ends) and execs the server, same pid. Not a preexec_fn: Python run
    between fork and exec in a process with other threads (gRPC's) can crash the child (a
    redis-server start died of SIGSEGV that way under load). Without setpriv (not Linux, a
    minimal image), nothing: the embedded registry still finds what is left behind."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, what: str, proc: subprocess.Popen, timeout: float, log_path: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting\n{tail}")
        with contextlib.suppress(OSError):
            if predicate():
                return
        time.sleep(0.2)
    tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tail}")


@dataclass
class ManagedProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path | None = None

    @property
    def ports(self) -> dict[str, int]:
        """Its listening ports by role."""
        return {}

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class RedisServer(ManagedProcess):
    port: int = 0

    @property
    def ports(self) -> dict[str, int]:
        return {"port": self.port}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(
    port: int | None = None, maxmemory: str = "512mb", timeout: float = 20.0, extra_args: list[str] | None = None
) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found on PATH (Debian/Ubuntu: apt-get install redis-server)")
    port = port or free_port()
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "allkeys-lru",
        "--loglevel",
        "warning",
        *(extra_args or []),
    ]
    proc = subprocess.Popen(
        [*_dies_with_parent(), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # NOAUTH: up, with a password

    server = RedisServer("redis-server", proc, None, port)
    try:
        _wait(ping, "redis-server", proc, timeout, None)
    except Exception:
        server.kill()
        raise
    log.info("redis-server listening on %s", server.url)
    return server


def record_servers(directory: Path, servers: list[ManagedProcess]) -> Path | None:
    """Records `servers` (those still running) as this process's embedded servers, replacing
    its earlier record: what a later start reads should this process end without stopping
    them (embedded_registry.stop_stale_servers). None where processes cannot be named (no /proc)."""
    records = [server_record(s.name, s.proc.pid, s.ports) for s in servers if s.proc.poll() is None]
    return write_record(directory, [r for r in records if r is not None])


def pytriton_dir() -> Path:
    """The tritonserver distribution inside the nvidia-pytriton wheel."""
    site = Path(sysconfig.get_paths()["purelib"])
    root = site / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"tritonserver not found under {root}: pip install --no-deps nvidia-pytriton==0.7.0")
    return root


def python_backend_dir(cache: Path) -> Path:
    """A backend directory whose python backend has the stub for this interpreter's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = cache / f"backends-py{version}"
    stub = target / "python" / "triton_python_backend_stub"
    if not stub.is_file():
        root = pytriton_dir()
        tmp = cache / f"backends-py{version}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / "backends" / "python", tmp / "python")
        shutil.copy(root / "python_backend_stubs" / version / "triton_python_backend_stub", tmp / "python")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


@dataclass
class TritonServer(ManagedProcess):
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0

    @property
    def ports(self) -> dict[str, int]:
        return {"grpc": self.grpc_port, "http": self.http_port, "metrics": self.metrics_port}

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
            return r.status == 200


def start_triton(
    repository: Path,
    log_path: Path,
    cache: Path,
    grpc_port: int | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
    timeout: float = 120.0,
    explicit_model_control: bool = False,
) -> TritonServer:
    """Starts the wheel's tritonserver on loopback. Python-backend models run in this
    interpreter's environment: its bin/ goes first on PATH (ENVIRONMENT.md).
    `explicit_model_control`: every model loaded at start, and (re)loadable through the API
    (a model swapped in place, as a rolling update does, without a not-ready gap)."""
    root = pytriton_dir()
    backends = python_backend_dir(cache)
    grpc_port, http_port, metrics_port = (
        grpc_port or free_port(),
        http_port or free_port(),
        metrics_port or free_port(),
    )
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(libs), env.get("LD_LIBRARY_PATH", "")] if p)
    cmd = [
        str(root / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
        *(["--model-control-mode=explicit", "--load-model=*"] if explicit_model_control else []),
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [*_dies_with_parent(), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = TritonServer("tritonserver", proc, log_path, http_port, grpc_port, metrics_port)
    try:
        _wait(server.ready, "tritonserver", proc, timeout, log_path)
    except Exception:
        server.kill()
        raise
    log.info("tritonserver ready: grpc %s, http %s, metrics %d", server.grpc_url, server.http_url, metrics_port)
    return server
