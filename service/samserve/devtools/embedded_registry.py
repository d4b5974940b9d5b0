"""A record of the embedded servers each `samserve serve` runs, and what a start does with the
ones a gone owner left running.

Each owner writes `<directory>/<owner pid>.json`: its pid and start time, the boot it ran in,
and per server its name, pid, start time and ports. A process is named by (pid, start time),
the start time being field 22 of /proc/<pid>/stat (clock ticks after boot), so a pid the
kernel has since given to another process is never taken for the server. Linux only: where
there is no /proc nothing is written and nothing is stopped."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
_PROC = Path("/proc")


@dataclass(frozen=True)
class ServerRecord:
    """One embedded server: `start_time` in clock ticks after boot, `ports` by role."""

    name: str
    pid: int
    start_time: int
    ports: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        ports = ", ".join(f"{role} {port}" for role, port in self.ports.items())
        return f"{self.name} pid {self.pid} ({ports})" if ports else f"{self.name} pid {self.pid}"


@dataclass(frozen=True)
class OwnerRecord:
    """The process that started `servers`; `boot_id` the boot it ran in, `recorded_at` the Unix
    time of the record's last write."""

    pid: int
    start_time: int
    boot_id: str
    recorded_at: float
    servers: tuple[ServerRecord, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> OwnerRecord:
        raw = json.loads(text)
        servers = tuple(
            ServerRecord(
                str(s["name"]), int(s["pid"]), int(s["start_time"]), {str(k): int(v) for k, v in s["ports"].items()}
            )
            for s in raw["servers"]
        )
        return cls(int(raw["pid"]), int(raw["start_time"]), str(raw["boot_id"]), float(raw["recorded_at"]), servers)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat; None when the pid runs nothing (a zombie counts as
    ended) or there is no /proc."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ")".
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str | None:
    """This boot's id: start times count from boot, so they compare only within one."""
    try:
        return (_PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return None


def same_process(pid: int, start_time: int) -> bool:
    """Whether `pid` still runs the process that started at `start_time`."""
    return process_start_time(pid) == start_time


def server_record(name: str, pid: int, ports: dict[str, int]) -> ServerRecord | None:
    """The record of a running server; None where start times cannot be read."""
    start_time = process_start_time(pid)
    return None if start_time is None else ServerRecord(name, pid, start_time, dict(ports))


def record_path(directory: Path, owner_pid: int) -> Path:
    return directory / f"{owner_pid}.json"


def write_record(directory: Path, servers: list[ServerRecord]) -> Path | None:
    """Records `servers` as this process's, replacing its earlier record atomically (a
    reader sees the old record or the new one, never part of one). None where there is no
    /proc to name processes by."""
    owner, boot = os.getpid(), boot_id()
    start_time = process_start_time(owner)
    if start_time is None or boot is None:
        return None
    record = OwnerRecord(owner, start_time, boot, time.time(), tuple(servers))
    directory.mkdir(parents=True, exist_ok=True)
    path = record_path(directory, owner)
    tmp = directory / f".{owner}.json.tmp"
    with tmp.open("w") as f:
        f.write(record.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def remove_record(directory: Path, owner_pid: int | None = None) -> None:
    """Removes the record of `owner_pid` (this process by default), if there is one."""
    record_path(directory, os.getpid() if owner_pid is None else owner_pid).unlink(missing_ok=True)


def read_records(directory: Path) -> list[tuple[Path, OwnerRecord]]:
    """The records in `directory`, oldest first; one that does not parse is reported
    and removed (records are written whole, so it can only be damage)."""
    records = []
    for path in directory.glob("*.json"):
        try:
            records.append((path, OwnerRecord.from_json(path.read_text())))
        except FileNotFoundError:
            continue  # its owner removed it meanwhile
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("removing unreadable embedded-server record %s: %s", path, exc)
            path.unlink(missing_ok=True)
    return sorted(records, key=lambda r: r[1].recorded_at)


def group_running(pgid: int) -> bool:
    """Some process of group `pgid` still runs (zombies do not count; no /proc: none)."""
    try:
        entries = [e for e in _PROC.iterdir() if e.name.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


def stop_process(pid: int, start_time: int, timeout: float = 15.0) -> bool:
    """SIGTERM the process group of the process (pid, start_time), then SIGKILL what is left
    after `timeout`, as `ManagedProcess.stop` does for a child. Returns whether it ended, with
    every process of its group when it leads one (a helper may outlive its leader a moment).
    Before each signal the pid is checked to be the same process still; between that check and
    the signal the pid cannot be reused unless the process ends and is reaped in that instant."""

    try:
        leads_group = same_process(pid, start_time) and os.getpgid(pid) == pid
    except ProcessLookupError:
        leads_group = False

    def signal_it(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            # The servers lead their own group (start_new_session), their helpers in it: the
            # group is signalled while its leader, or any helper of it, still runs.
            if leads_group and (same_process(pid, start_time) or group_running(pid)):
                os.killpg(pid, sig)
            elif same_process(pid, start_time):
                os.kill(pid, sig)

    def ended_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        # not a child of ours: no wait(), so poll, for the leader and then its group
        while same_process(pid, start_time) or (leads_group and group_running(pid)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    signal_it(signal.SIGTERM)
    if ended_within(timeout):
        return True
    signal_it(signal.SIGKILL)
    return ended_within(5.0)


def stop_stale_servers(directory: Path, timeout: float = 15.0) -> list[ServerRecord]:
    """What a start does before it starts servers: every record whose owner is gone (its pid
    ended, or now names another process) is settled. Each of its servers still running as the
    same process is reported at WARNING and stopped; then the record is removed. A record of a
    live owner (another `serve`) is left alone. Returns the servers stopped."""
    if not directory.is_dir() or process_start_time(os.getpid()) is None:
        return []
    this_boot = boot_id()
    stopped: list[ServerRecord] = []
    for path, record in read_records(directory):
        same_boot = record.boot_id == this_boot
        if same_boot and same_process(record.pid, record.start_time):
            continue
        owner = f"samserve serve pid {record.pid} (last recorded {time.ctime(record.recorded_at)}), which is gone"
        running = [s for s in record.servers if same_boot and same_process(s.pid, s.start_time)]
        if not running:
            log.info("removing the record of %s: none of its servers runs (%s)", owner, path)
        left = []
        for server in running:
            log.warning("stale embedded server %s left running by %s: stopping it", server.describe(), owner)
            try:
                ended = stop_process(server.pid, server.start_time, timeout)
            except PermissionError:
                ended = False
            if ended:
                log.warning("stopped stale %s", server.describe())
                stopped.append(server)
            else:
                log.error("could not stop stale %s: it stays on record (%s)", server.describe(), path)
                left.append(server)
        if left:
            continue
        path.unlink(missing_ok=True)
    return stopped
