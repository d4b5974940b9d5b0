"""The embedded servers die with the gateway that started them, however it dies: `kill -9` of
`samserve serve` must not leave a redis-server (or tritonserver) holding its port and memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

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
