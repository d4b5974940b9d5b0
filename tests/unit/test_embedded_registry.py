"""The record of embedded servers and what a start does with it, on real processes: a server its
gone owner left running is stopped, with its process group; a pid that now names another
process (another start time, another boot) is never signalled; a live owner's record stays."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samserve.devtools.embedded_registry import (
    OwnerRecord,
    ServerRecord,
    boot_id,
    process_start_time,
    read_records,
    record_path,
    remove_record,
    server_record,
    stop_stale_servers,
    write_record,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names processes through /proc")


@pytest.fixture
def spawn():
    """Starts processes in their own session (as the embedded servers are) and kills what is
    left of them at the end."""
    procs: list[subprocess.Popen] = []

    def start(*cmd: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, start_new_session=True, text=True, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _leave(
    directory: Path, owner_pid: int, owner_start: int, servers: list[ServerRecord], boot: str | None = None
) -> Path:
    """A record as a `serve` that was then killed would have left it."""
    record = OwnerRecord(owner_pid, owner_start, boot or boot_id(), time.time() - 60, tuple(servers))
    directory.mkdir(parents=True, exist_ok=True)
    path = record_path(directory, owner_pid)
    path.write_text(record.to_json())
    return path


def _running(pid: int) -> bool:
    return process_start_time(pid) is not None


RENAMES_ITSELF = """
import ctypes, sys
print(flush=True)
sys.stdin.readline()
ctypes.CDLL(None).prctl(15, b"x) S 1 2 3", 0, 0, 0)  # PR_SET_NAME: its /proc command name
print(flush=True)
sys.stdin.readline()
"""


def test_start_time_is_read_past_a_command_name_with_spaces_and_parentheses(spawn):
    child = spawn(sys.executable, "-c", RENAMES_ITSELF, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdout.readline()
    before = process_start_time(child.pid)
    assert before is not None and before >= process_start_time(os.getpid())
    child.stdin.write("\n")
    child.stdin.flush()
    child.stdout.readline()
    assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "x) S 1 2 3"
    assert process_start_time(child.pid) == before  # a split on spaces would read another field


def test_a_record_is_written_whole_and_read_back(tmp_path, spawn):
    server = spawn("sleep", "600")
    record = server_record("redis-server", server.pid, {"port": 6390})
    assert record is not None
    path = write_record(tmp_path, [record])
    assert path == record_path(tmp_path, os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left beside it
    [(read_path, owner)] = read_records(tmp_path)
    assert read_path == path
    assert (owner.pid, owner.start_time, owner.boot_id) == (os.getpid(), process_start_time(os.getpid()), boot_id())
    assert owner.servers == (record,)
    remove_record(tmp_path)
    assert not path.exists()


def test_a_server_left_by_a_dead_owner_is_reported_and_stopped_with_its_group(tmp_path, spawn, caplog):
    leader = spawn("sh", "-c", "sleep 600 & echo $!; wait", stdout=subprocess.PIPE)
    helper = int(leader.stdout.readline())
    owner = _dead_pid()
    server = ServerRecord("tritonserver", leader.pid, process_start_time(leader.pid), {"grpc": 8001, "http": 8000})
    path = _leave(tmp_path, owner, 12345, [server])

    with caplog.at_level(logging.INFO, logger="samserve.devtools.embedded_registry"):
        stopped = stop_stale_servers(tmp_path, timeout=5)

    assert stopped == [server]
    assert not _running(leader.pid)
    assert not _running(helper), "the server's process group was not stopped"
    assert not path.exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"tritonserver pid {leader.pid} (grpc 8001, http 8000)" in m and f"samserve serve pid {owner}" in m
        for m in warnings
    ), warnings
    assert any(m.startswith("stopped stale tritonserver") for m in warnings), warnings


def test_an_owner_whose_pid_was_reused_counts_as_gone(tmp_path, spawn):
    impostor = spawn("sleep", "600")  # holds the owner's pid now, but started at another time
    server = spawn("sleep", "600")
    _leave(
        tmp_path, impostor.pid, process_start_time(impostor.pid) - 1, [server_record("redis-server", server.pid, {})]
    )

    stop_stale_servers(tmp_path, timeout=5)

    assert not _running(server.pid)
    assert _running(impostor.pid)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reuse", ["start_time", "boot"], ids=["other-start-time", "other-boot"])
def test_a_recorded_pid_that_now_names_another_process_is_not_signalled(tmp_path, spawn, caplog, reuse):
    bystander = spawn("sleep", "600")  # what the kernel gave the recorded server's pid to
    start = process_start_time(bystander.pid)
    recorded = ServerRecord("redis-server", bystander.pid, start + 1 if reuse == "start_time" else start, {"port": 1})
    path = _leave(tmp_path, _dead_pid(), 1, [recorded], boot="another-boot" if reuse == "boot" else None)

    with caplog.at_level(logging.INFO, logger="samserve.devtools.embedded_registry"):
        assert stop_stale_servers(tmp_path, timeout=5) == []

    time.sleep(0.2)
    assert bystander.poll() is None, "a process that merely has the recorded pid was signalled"
    assert not path.exists()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "none of its servers runs" in caplog.records[0].getMessage()


def test_a_live_owners_record_and_servers_are_left_alone(tmp_path, spawn, caplog):
    owner = spawn("sleep", "600")  # another serve, still running
    server = spawn("sleep", "600")
    path = _leave(tmp_path, owner.pid, process_start_time(owner.pid), [server_record("redis-server", server.pid, {})])

    with caplog.at_level(logging.INFO, logger="samserve.devtools.embedded_registry"):
        assert stop_stale_servers(tmp_path, timeout=5) == []

    time.sleep(0.2)
    assert server.poll() is None and owner.poll() is None
    assert path.exists()
    assert caplog.records == []


def test_an_unreadable_record_is_reported_and_removed(tmp_path, caplog):
    (tmp_path / "4242.json").write_text('{"pid": 4242, "serv')
    with caplog.at_level(logging.WARNING, logger="samserve.devtools.embedded_registry"):
        assert stop_stale_servers(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert "4242.json" in caplog.text
