"""Stalled and slow clients against one gateway: 2 x max_concurrent_requests of them, over gRPC
and HTTP, reading nothing or trickling, while a well-behaved client clicks (Segment of a cached
image by image_id, one point; every fifth click over HTTP). Its p50/p99 and errors unloaded,
under the attack and once the gateway has cut the bad clients off, and how long that took.

    .venv/bin/python benchmarks/stalled_clients.py                          # this checkout's gateway
    git worktree add /tmp/before 0a0eb0a                                    # the gateway before the defences
    .venv/bin/python benchmarks/stalled_clients.py --tree /tmp/before
    .venv/bin/python benchmarks/stalled_clients.py --slots 16 --idle 10 --max-stream 30 --window 120

Starts redis-server and tritonserver (the test model, S=256) from this checkout and one gateway
process from --tree's service/ (PYTHONPATH, this virtualenv's python), with --slots request
slots and the limits given; a setting the tree does not have is left out, and said so. Every
client has its own bearer token (its own share of the slots) and the HTTP ones their own
loopback address. The bad clients, as many of each kind:

  grpc stalled   GenerateMasksStream of a 600x800 image keeping every mask of an 8x8 grid
                 (~11 MB): reads the first message, then nothing
  grpc slow      the same stream, read a message a second: it would last minutes
  http stalled   POST /v1/generate_masks_stream (the same request) with a 4 KiB receive
                 buffer: reads the status line, then nothing
  http slow      POST /v1/segment declaring a 100 kB body and sending a byte a second

One refused (RESOURCE_EXHAUSTED / 429) tries again every 0.5 s for --window s; none comes back
once it has been let in and cut. Phases: unloaded (--clicks clicks); attack, from the bad
clients' start until the slots are freed (the gateway's samserve_requests_in_flight no more
than the good client's own click for 2 s, no bad client still waiting to get in) or --window
s; after, --clicks more (after --window, with the bad clients still connected). Then each bad
client still connected reads what is left for 10 s, to tell an answer the gateway ended from
one still running.

Prints per phase the good client's p50 and p99 of its answered clicks, its p99 over the
unloaded p99 and its errors by status; when the slots were freed and when the good client had
its last error; how each kind of bad client ended (what the gateway said, when the client saw
it while the attack ran); a timeline every 5 s of the most in flight, the gateway's
GenerateMasksStream statuses, samserve_stalled_clients_total ("-": not in the tree) and 408s
since the attack began, with the good client's clicks and errors; the gateway's counts of the
run. Goal: after the cut, no error and p99 under 2x unloaded. Exits 0 (1 only if the stack
fails to start).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402

KINDS = ("grpc stalled", "grpc slow", "http stalled", "http slow")
MANY_MASKS = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
RETRY_S = 0.5  # a refused bad client's next try
SAMPLE_S = 0.25  # the in-flight gauge's sampling
QUIET_S = 2.0  # no bad client in flight this long: the slots are freed
DRAIN_S = 10.0  # at the end, how long an unread answer is read to see whether the gateway ended it
DRAIN_BYTES = 64 << 20
SLOW_BODY_BYTES = 100_000
TIMELINE_S = 5.0


# -- the gateway --------------------------------------------------------------------------


@dataclass
class Gateway:
    proc: subprocess.Popen
    target: str
    http: tuple[str, int]
    metrics_url: str
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://{self.http[0]}:{self.http[1]}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def tree_settings(tree: Path) -> set[str]:
    """The setting names of `tree`'s gateway (its Settings class's fields)."""
    text = (tree / "service" / "samserve" / "gateway" / "settings.py").read_text()
    return set(re.findall(r"^    (\w+): ", text, re.MULTILINE))


def tree_revision(tree: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def start_gateway(tree: Path, triton_url: str, redis_url: str, wanted: dict[str, object], log_path: Path):
    """`samserve serve --no-embedded` of `tree`, configured through SAMSERVE_* for the settings
    it has; (the gateway, the settings left out)."""
    from samserve.devtools.local_servers import free_port

    known = tree_settings(tree)
    env = dict(os.environ, PYTHONPATH=str(tree / "service"))
    for name, value in wanted.items():
        if name in known:
            env[f"SAMSERVE_{name.upper()}"] = str(value)
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "samserve.client.cli", "serve", "--no-embedded", "--port", str(port)]
    command += ["--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log-level", "WARNING"]
    command += ["--triton-url", triton_url, "--redis-url", redis_url]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
    gw = Gateway(
        proc, f"127.0.0.1:{port}", ("127.0.0.1", http_port), f"http://127.0.0.1:{metrics_port}/metrics", log_path
    )
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(gw.http_url + "/v1/health", timeout=2) as r:
            if r.status == 200:
                break
        if time.monotonic() > deadline:
            gw.stop()
            raise TimeoutError(f"the gateway not ready in 120 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    return gw, sorted(set(wanted) - known)


def scrape(url: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v for k, v in samples.items() if k.partition("{")[0] == name and all(w in k.partition("{")[2] for w in want)
    )


class Watch:
    """Samples the gateway's /metrics every SAMPLE_S: samserve_requests_in_flight (the last time
    a bad client held a slot: more in flight than the good client's click, if one was under way
    while the sample was taken) and the counts the timeline shows. `clicks()`: the good
    client's (click under way, clicks started)."""

    def __init__(self, url: str, started: float, clicks: Callable[[], tuple[bool, int]]) -> None:
        self.url = url
        self.started = started
        self.clicks = clicks
        self.now = 0.0
        self.peak = 0.0
        self.last_busy = time.monotonic()
        self.samples: list[tuple[float, float, dict[str, float]]] = []  # (s since the start, in flight, counts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            with contextlib.suppress(OSError):
                before = self.clicks()
                samples = scrape(self.url)
                after = self.clicks()
                own = 1 if before[0] or before != after else 0
                self.now = total(samples, "samserve_requests_in_flight")
                self.peak = max(self.peak, self.now)
                if self.now > own:
                    self.last_busy = time.monotonic()
                self.samples.append((time.monotonic() - self.started, self.now, timeline_counts(samples)))

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_busy

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def timeline_counts(samples: dict[str, float]) -> dict[str, float]:
    """What ended the bad clients' requests: streams by status, idle cut-offs, refused bodies."""
    counts = {
        code: total(samples, "samserve_requests_total", method="GenerateMasksStream", code=code)
        for code in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")
    }
    stalled = any(k.startswith("samserve_stalled_clients_total") for k in samples)
    counts["stalled"] = total(samples, "samserve_stalled_clients_total") if stalled else math.nan
    counts["408"] = total(samples, "samserve_http_requests_total", status="408")
    return counts


# -- the bad clients ----------------------------------------------------------------------


@dataclass
class Attack:
    target: str
    http: tuple[str, int]
    amg_request: object  # pb.GenerateMasksRequest
    amg_body: bytes  # its JSON
    retry_until: float
    stop: threading.Event = field(default_factory=threading.Event)

    def may_retry(self) -> bool:
        return time.monotonic() < self.retry_until and not self.stop.is_set()


@dataclass
class Bad:
    kind: str
    token: str
    source: str  # a loopback address of its own (HTTP)
    waiting: bool = True  # not let in yet
    refusals: int = 0
    admitted_at: float | None = None
    ended_at: float | None = None  # when the client saw its end, while the attack ran
    outcome: str = ""

    def admit(self) -> None:
        self.waiting = False
        self.admitted_at = time.monotonic()

    def end(self, outcome: str, seen_now: bool = True) -> None:
        self.waiting = False
        self.outcome = outcome
        if seen_now:
            self.ended_at = time.monotonic()

    def refused(self, attack: Attack) -> bool:
        """Counts a refusal; whether to try again (after RETRY_S)."""
        self.refusals += 1
        if not attack.may_retry():
            self.end("refused until the window closed")
            return False
        time.sleep(RETRY_S)
        return True


def _limit_named(details: str) -> str:
    """The setting a gateway's message names, e.g. '(stream_idle_timeout_s)'."""
    found = re.findall(r"\((\w+_s|\w+_rate)\)", details or "")
    return f" ({found[-1]})" if found else ""


def grpc_stream(bad: Bad, attack: Attack, read_every_s: float | None) -> None:
    """GenerateMasksStream, without a deadline (the gateway must end it): reads the first
    message, then one every `read_every_s`, or none (None)."""
    import grpc

    from samserve.v1 import samserve_pb2_grpc as pb_grpc

    # no BDP probing: the receive window stays small, so an unread stream blocks the gateway within a few messages
    channel = grpc.insecure_channel(attack.target, options=[("grpc.http2.bdp_probe", 0)])
    stub = pb_grpc.SegmentAnythingStub(channel)
    metadata = [("authorization", f"Bearer {bad.token}")]
    try:
        while True:
            call = stub.GenerateMasksStream(attack.amg_request, metadata=metadata)
            try:
                next(call)
            except grpc.RpcError as exc:
                call.cancel()
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and bad.refused(attack):
                    continue
                if not bad.outcome:
                    bad.end(exc.code().name + _limit_named(exc.details()))
                return
            except StopIteration:
                return bad.end("completed")
            bad.admit()
            break
        while not attack.stop.wait(read_every_s or SAMPLE_S):
            if read_every_s is None:
                if call.done():  # the status came although nothing was read
                    return bad.end(call.code().name + _limit_named(call.details()))
                continue
            try:
                next(call)
            except grpc.RpcError as exc:
                return bad.end(exc.code().name + _limit_named(exc.details()))
            except StopIteration:
                return bad.end("completed")
        _drain_grpc(bad, call)
    finally:
        channel.close()


def _drain_grpc(bad: Bad, call) -> None:
    """At the end: reads the rest of the stream for DRAIN_S, to tell an end the gateway sent
    (with its status) from a stream still running."""
    import grpc

    timer = threading.Timer(DRAIN_S, call.cancel)
    timer.start()
    messages = 0
    try:
        for _ in call:
            messages += 1
        bad.end("completed when read at the end", seen_now=False)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            bad.end(f"still open: {messages} messages read at the end, then cancelled", seen_now=False)
        else:  # the gateway had ended it; the messages before its status were still buffered
            seen = f", seen at the end after {messages} buffered messages"
            bad.end(exc.code().name + _limit_named(exc.details()) + seen, seen_now=False)
    finally:
        timer.cancel()


def _connect(bad: Bad, attack: Attack, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.bind((bad.source, 0))
    sock.settimeout(60)
    sock.connect(attack.http)
    return sock


def _head(bad: Bad, attack: Attack, path: str, length: int) -> bytes:
    host = f"{attack.http[0]}:{attack.http[1]}"
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {bad.token}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def _status(answer: bytes) -> str:
    """'HTTP 408' from the answer's status line."""
    parts = answer.split(b" ", 2)
    return f"HTTP {parts[1].decode('latin-1')}" if len(parts) > 1 else "no answer"


def http_stalled(bad: Bad, attack: Attack) -> None:
    """The NDJSON stream: reads its status line, then nothing until the end."""
    while True:
        sock = _connect(bad, attack, rcvbuf=4096)
        try:
            sock.sendall(_head(bad, attack, "/v1/generate_masks_stream", len(attack.amg_body)) + attack.amg_body)
            answer = sock.recv(64)
        except OSError as exc:
            sock.close()
            return bad.end(f"{type(exc).__name__} before an answer")
        if _status(answer) == "HTTP 200":
            bad.admit()
            break
        sock.close()
        if _status(answer) == "HTTP 429" and bad.refused(attack):
            continue
        if not bad.outcome:
            bad.end(_status(answer))
        return
    attack.stop.wait()
    # the gateway's close of a stalled stream shows only once its queued bytes are read
    received, tail, started = 0, b"", time.monotonic()
    sock.settimeout(1.0)
    try:
        while time.monotonic() - started < DRAIN_S and received < DRAIN_BYTES:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                ended = (tail + chunk).endswith(b"0\r\n\r\n")  # the chunked answer's last chunk
                what = "completed when read at the end" if ended else "closed by the gateway mid-answer"
                return bad.end(f"{what} ({received / 2**20:.1f} MiB queued)", seen_now=False)
            received += len(chunk)
            tail = (tail + chunk)[-16:]
        bad.end(f"still open: {received / 2**20:.1f} MiB read at the end", seen_now=False)
    except OSError as exc:
        bad.end(f"{type(exc).__name__} ({received / 2**20:.1f} MiB queued): closed by the gateway", seen_now=False)
    finally:
        sock.close()


def http_slow(bad: Bad, attack: Attack) -> None:
    """POST /v1/segment declaring SLOW_BODY_BYTES and sending a byte a second."""
    while True:
        sock = _connect(bad, attack)
        sent = 0
        answer = b""
        try:
            sock.sendall(_head(bad, attack, "/v1/segment", SLOW_BODY_BYTES) + b'{"image_id": "')
            bad.admit()
            sock.settimeout(1.0)
            while not attack.stop.is_set() and sent < SLOW_BODY_BYTES - 20:
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    sock.sendall(b"a")
                    sent += 1
                    continue
                answer += chunk
                if not chunk or b"\r\n" in answer:
                    break
        except OSError as exc:
            sock.close()
            return bad.end(f"{type(exc).__name__} after {sent} bytes")
        sock.close()
        if attack.stop.is_set():
            return bad.end(f"still sending at the end ({sent} bytes sent)", seen_now=False)
        if _status(answer) == "HTTP 429":
            bad.waiting, bad.admitted_at = True, None
            if bad.refused(attack):
                continue
            return None
        return bad.end(f"{_status(answer)} after {sent} bytes" if answer else f"closed after {sent} bytes")


BEHAVIOUR: dict[str, Callable[[Bad, Attack], None]] = {
    "grpc stalled": lambda bad, attack: grpc_stream(bad, attack, None),
    "grpc slow": lambda bad, attack: grpc_stream(bad, attack, 1.0),
    "http stalled": http_stalled,
    "http slow": http_slow,
}


# -- the good client ----------------------------------------------------------------------


@dataclass
class Click:
    at: float  # monotonic
    seconds: float
    status: str  # OK, or the gRPC status name (HTTP: the error's status)


class GoodClient:
    """Clicks: Segment by image_id with one point, paced `pace_s` start to start; every fifth
    over HTTP."""

    def __init__(self, gw: Gateway, token: str, image_id: str, pace_s: float) -> None:
        import httpx

        from samserve.client import SamClient

        self.sam = SamClient(gw.target, timeout_s=30, token=token)
        self.http = httpx.Client(base_url=gw.http_url, headers={"authorization": f"Bearer {token}"}, timeout=30)
        self.image_id = image_id
        self.pace_s = pace_s
        self.count = 0
        self.clicking = False

    def state(self) -> tuple[bool, int]:
        return self.clicking, self.count

    def click(self) -> Click:
        import grpc
        import httpx

        from samserve.client import PromptSpec

        i = self.count
        self.clicking = True
        self.count += 1
        x, y = 40 + (i * 37) % 560, 40 + (i * 53) % 400
        started = time.perf_counter()
        status = "OK"
        try:
            if i % 5 == 4:
                body = {"image_id": self.image_id, "prompts": [{"points": [{"x": x, "y": y, "label": 1}]}]}
                r = self.http.post("/v1/segment", json=body)
                if r.status_code != 200:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        status = r.json()["error"]["status"]
                    status = status if status != "OK" else f"HTTP {r.status_code}"
            else:
                self.sam.segment(image_id=self.image_id, prompts=[PromptSpec(points=[(x, y)], labels=[1])])
        except grpc.RpcError as exc:
            status = exc.code().name
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        finally:
            self.clicking = False
        return Click(time.monotonic(), time.perf_counter() - started, status)

    def run(self, count: int | None = None, until: Callable[[], bool] | None = None) -> list[Click]:
        clicks: list[Click] = []
        due = time.monotonic()
        while (count is None or len(clicks) < count) and not (until and until()):
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due + self.pace_s, time.monotonic())
            clicks.append(self.click())
        return clicks

    def close(self) -> None:
        self.sam.close()
        self.http.close()


# -- the run ------------------------------------------------------------------------------


def summary(clicks: list[Click]) -> tuple[float, float, collections.Counter]:
    ok = [c.seconds for c in clicks if c.status == "OK"]
    p50, p99 = (float(np.percentile(ok, q)) * 1e3 for q in (50, 99)) if ok else (float("nan"), float("nan"))
    return p50, p99, collections.Counter(c.status for c in clicks if c.status != "OK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose gateway runs (default: this one)")
    p.add_argument("--slots", type=int, default=8, help="max_concurrent_requests; 2x as many bad clients")
    p.add_argument("--per-client", type=int, default=16, help="max_requests_per_client")
    p.add_argument("--idle", type=float, default=5.0, help="stream_idle_timeout_s (before: stream_write_timeout_s)")
    p.add_argument("--max-stream", type=float, default=15.0, help="stream_max_s")
    p.add_argument("--read-timeout", type=float, default=10.0, help="http_read_timeout_s")
    p.add_argument("--window", type=float, default=90.0, help="the longest the attack phase lasts, s")
    p.add_argument("--clicks", type=int, default=150, help="clicks unloaded, and again after the cut")
    p.add_argument("--pace", type=float, default=0.1, help="seconds between clicks' starts")
    args = p.parse_args()

    from samserve.client import SamClient
    from samserve.devtools.sample_images import png_image
    from samserve.v1 import samserve_pb2 as pb

    tree = args.tree.resolve()
    n_bad = 2 * args.slots
    bads = [Bad(KINDS[i % len(KINDS)], f"bad{i:02d}", f"127.0.0.{i + 2}") for i in range(n_bad)]
    wanted = {
        "max_concurrent_requests": args.slots,
        "max_requests_per_client": args.per_client,
        "stream_idle_timeout_s": args.idle,
        "stream_write_timeout_s": args.idle,  # the gRPC stream's write timeout before stream_idle_timeout_s
        "stream_max_s": args.max_stream,
        "http_read_timeout_s": args.read_timeout,
        "amg_stream_chunk_bytes": 16 * 1024,  # small messages: a stalled gRPC stream blocks within 64 KiB
        "auth_tokens": ",".join(["good"] + [b.token for b in bads]),
    }
    image = png_image(600, 800, 91)
    amg_request = pb.GenerateMasksRequest(
        image=image, output_format=pb.MASK_FORMAT_PACKED_BITS, options=pb.AmgOptions(**MANY_MASKS)
    )
    amg_body = json.dumps(
        {"image": base64.b64encode(image).decode(), "options": MANY_MASKS, "output_format": "MASK_FORMAT_PACKED_BITS"}
    ).encode()

    with local_stack(load_model("small"), gateways=0, prefix="samserve-stalled-") as stack:
        log_path = stack.repository.parent / "gateway.log"
        gw, missing = start_gateway(tree, stack.triton.grpc_url, stack.redis.url, wanted, log_path)
        try:
            with SamClient(gw.target, timeout_s=120, token="good") as c:
                image_id = c.embed(png_image(480, 640, 7)).image_id
                c.generate_masks_pb(image, points_per_side=4)  # warm: the AMG image's embedding cached
            good = GoodClient(gw, "good", image_id, args.pace)
            good.run(10)  # warm
            unloaded = good.run(args.clicks)

            base = timeline_counts(scrape(gw.metrics_url))
            started = time.monotonic()
            watch = Watch(gw.metrics_url, started, good.state)
            attack = Attack(gw.target, gw.http, amg_request, amg_body, started + args.window)
            threads = [threading.Thread(target=BEHAVIOUR[b.kind], args=(b, attack), daemon=True) for b in bads]
            for t in threads:
                t.start()

            def freed() -> bool:
                settled = time.monotonic() - started > QUIET_S and not any(b.waiting for b in bads)
                return settled and watch.quiet_for() >= QUIET_S

            window_end = started + args.window
            under_attack = good.run(until=lambda: freed() or time.monotonic() > window_end)
            freed_at = watch.last_busy - started + SAMPLE_S if freed() else None
            in_flight_then = watch.now
            after = good.run(args.clicks)
            attack.stop.set()
            for t in threads:
                t.join(DRAIN_S + 10)
            watch.stop()
            counts = scrape(gw.metrics_url)
            good.close()
        finally:
            gw.stop()

    print(f"\ngateway: {tree} ({tree_revision(tree)}); {n_bad} bad clients ({n_bad // len(KINDS)} of each kind)")
    applied = ", ".join(f"{k}={v}" for k, v in wanted.items() if k not in missing and k != "auth_tokens")
    print(f"settings: {applied}; {n_bad + 1} bearer tokens")
    print(f"not in this tree (left out): {', '.join(missing) or 'none'}")
    print(f"good client: a click every {args.pace:g} s; p50/p99 of its answered clicks\n")
    phases = {"unloaded": unloaded, "attack": under_attack, "after": after}
    print_phases(phases, started)
    if freed_at is not None:
        print(f"\nslots freed +{freed_at:.1f} s after the attack began (peak {watch.peak:.0f} in flight)")
    else:
        held = f"{in_flight_then:.0f} in flight then (peak {watch.peak:.0f})"
        print(f"\nslots not freed within {args.window:g} s: {held}; the after phase ran with them held")
    errors = [c.at - started for c in under_attack + after if c.status != "OK"]
    print(f"the good client's last error: +{errors[-1]:.1f} s" if errors else "the good client: no error")
    base_p99 = summary(unloaded)[1]
    _, after_p99, after_errors = summary(after)
    met = not after_errors and after_p99 < 2 * base_p99
    print(f"goal (after the cut: no error, p99 < 2x unloaded): {'met' if met else 'not met'}")
    print_bad_clients(bads, started)
    print_timeline(watch.samples, base, under_attack + after, started)
    print_counts(counts)
    return 0


def print_phases(phases: dict[str, list[Click]], started: float) -> None:
    base_p99 = summary(phases["unloaded"])[1]
    print(f"{'phase':26s} {'clicks':>6s} {'p50 ms':>8s} {'p99 ms':>8s} {'p99/unloaded':>13s}  errors")
    for name, clicks in phases.items():
        p50, p99, errors = summary(clicks)
        if name != "unloaded":
            name += f" (+{clicks[0].at - started:.0f} to +{clicks[-1].at - started:.0f} s)"
        listed = ", ".join(f"{k} {v}" for k, v in errors.most_common()) or "0"
        print(f"{name:26s} {len(clicks):6d} {p50:8.1f} {p99:8.1f} {p99 / base_p99:13.2f}  {listed}")


def print_bad_clients(bads: list[Bad], started: float) -> None:
    print(f"\n{'bad client':13s} {'n':>3s} {'let in':>6s} {'refusals':>8s} {'seen ended s':>12s}  how it ended")
    for kind in KINDS:
        group = [b for b in bads if b.kind == kind]
        ends = [b.ended_at - started for b in group if b.ended_at is not None]
        seen = f"{min(ends):.0f}-{max(ends):.0f}" if ends else "-"
        how = collections.Counter(b.outcome for b in group)
        listed = "; ".join(f"{v}x {k}" for k, v in how.most_common())
        admitted = sum(b.admitted_at is not None for b in group)
        print(f"{kind:13s} {len(group):3d} {admitted:6d} {sum(b.refusals for b in group):8d} {seen:>12s}  {listed}")


def print_timeline(samples, base: dict[str, float], clicks: list[Click], started: float) -> None:
    """Every TIMELINE_S: the most in flight, the gateway's counts since the attack began, the
    good client's clicks and errors."""
    print("\ntimeline: s since the attack began; the gateway's counts since then (streams by status)")
    header = f"{'s':>7s} {'in flight':>9s} {'OK':>4s} {'CANCELLED':>9s} {'DEADLINE_EXC':>12s} {'stalled':>7s}"
    print(header + f" {'408':>4s} {'clicks':>6s} {'errors':>6s}")
    end = max([t for t, _, _ in samples] + [c.at - started for c in clicks])
    for lo in np.arange(0.0, end, TIMELINE_S):
        hi = lo + TIMELINE_S
        bucket = [(n, c) for t, n, c in samples if lo <= t < hi]
        if not bucket:
            continue
        last = {k: v - base.get(k, 0.0) for k, v in bucket[-1][1].items()}
        mine = [c for c in clicks if lo <= c.at - started < hi]
        cells = f"{lo:3.0f}-{hi:<3.0f} {max(n for n, _ in bucket):9.0f} {last['OK']:4.0f} {last['CANCELLED']:9.0f}"
        stalled = "-" if math.isnan(last["stalled"]) else f"{last['stalled']:.0f}"
        cells += f" {last['DEADLINE_EXCEEDED']:12.0f} {stalled:>7s} {last['408']:4.0f}"
        print(cells + f" {len(mine):6d} {sum(c.status != 'OK' for c in mine):6d}")


def by_label(counts: dict[str, float], metric: str, selector: str, label: str) -> dict[str, float]:
    """The non-zero samples of `metric` whose labels include `selector`, by the value of `label`."""
    return {
        k.split(f'{label}="')[1].split('"')[0]: v
        for k, v in counts.items()
        if k.startswith(metric + "{") and selector in k and v
    }


def print_counts(counts: dict[str, float]) -> None:
    print("\nthe gateway's counts, the whole run:")
    for method in ("GenerateMasksStream", "Segment"):
        codes = by_label(counts, "samserve_requests_total", f'method="{method}"', "code")
        print(f"  {method}: " + ", ".join(f"{c} {v:.0f}" for c, v in sorted(codes.items())))
    for route in ("/v1/segment", "/v1/generate_masks_stream"):
        statuses = by_label(counts, "samserve_http_requests_total", f'route="{route}"', "status")
        print(f"  HTTP {route}: " + ", ".join(f"{s} {v:.0f}" for s, v in sorted(statuses.items())))
    if any(k.startswith("samserve_stalled_clients_total") for k in counts):
        grpc_n = total(counts, "samserve_stalled_clients_total", transport="grpc")
        http_n = total(counts, "samserve_stalled_clients_total", transport="http")
        print(f"  samserve_stalled_clients_total: grpc {grpc_n:.0f}, http {http_n:.0f}")
    else:
        print("  samserve_stalled_clients_total: not in this tree")


if __name__ == "__main__":
    sys.exit(main())
