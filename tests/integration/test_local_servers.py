"""The embedded servers die with the gateway that started them, however it dies: `kill -9` of
`samserve serve` must not leave a redis-server (or tritonserver) holding its port and memory;
and should one outlive it all the same, the next start finds it on record, says so and stops it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samserve.devtools.embedded_registry import record_path, stop_stale_servers
from samserve.devtools.local_servers import _dies_with_parent

STARTER = """
import sys, time
from samserve.devtools.local_servers import start_redis
server = start_redis()
print(server.port, server.proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (not yet reaped) is dead
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not _dies_with_parent(), reason="no util-linux setpriv here to set the parent-death signal")
def test_a_server_dies_when_the_process_that_started_it_is_killed_hard():
    parent = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        port, pid = (int(x) for x in parent.stdout.readline().split())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it serves
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, "redis-server outlived the process that started it"
            time.sleep(0.05)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        else:
            raise AssertionError(f"port {port} still answers after its redis-server died")
    finally:
        parent.kill()
        parent.wait()
        if pid is not None:  # were it to outlive its parent, it is not left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# What `samserve serve` does for its redis-server, from a starter whose server does not get the
# parent-death signal (as if it had been lost): only the record is left to find it by.
UNARMED_STARTER = """
import sys, time
from pathlib import Path
from samserve.devtools import local_servers
local_servers._dies_with_parent = lambda: []
server = local_servers.start_redis()
local_servers.record_servers(Path(sys.argv[1]), [server])
print(server.port, server.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_start_reports_and_stops_a_server_its_killed_owner_left_running(tmp_path: Path, caplog):
    registry = tmp_path / "embedded"
    owner = subprocess.Popen([sys.executable, "-c", UNARMED_STARTER, str(registry)], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        port, pid = (int(x) for x in owner.stdout.readline().split())
        assert record_path(registry, owner.pid).is_file()
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        time.sleep(0.5)
        assert _alive(pid), "the server died with its owner: nothing left for the start to find"

        with caplog.at_level(logging.INFO, logger="samserve.devtools.embedded_registry"):
            stopped = stop_stale_servers(registry, timeout=10)

        assert [s.pid for s in stopped] == [pid]
        assert not _alive(pid)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            pass
        else:
            raise AssertionError(f"port {port} still answers after the stale redis-server was stopped")
        assert list(registry.iterdir()) == []
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            f"redis-server pid {pid} (port {port})" in m and f"samserve serve pid {owner.pid}" in m for m in warnings
        ), warnings
    finally:
        owner.kill()
        owner.wait()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
