"""GenerateMasksStream against GenerateMasks, side by side on one stack: time to the first
record and to the last, and the gateway's peak memory (RSS of a `samserve serve` process,
sampled every 5 ms), for a 32x32 grid with every mask kept (no thresholds, no NMS).

    .venv/bin/python benchmarks/amg_stream.py                    # the test model, packed bits
    .venv/bin/python benchmarks/amg_stream.py --format MASK_FORMAT_COCO_RLE
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402

OPTIONS = {"points_per_side": 32, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


class PeakRss:
    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--format", default="MASK_FORMAT_PACKED_BITS")
    args = parser.parse_args()

    from samserve.client import SamClient
    from samserve.devtools.local_servers import free_port
    from samserve.devtools.sample_images import png_image
    from samserve.v1 import samserve_pb2 as pb

    fmt = pb.MaskFormat.Value(args.format)

    def unary(c, image_id):
        response = c.generate_masks_pb(image_id=image_id, output_format=fmt, **OPTIONS)
        return len(response.masks), 1, response.ByteSize()

    def stream(c, image_id):
        count = messages = size = 0
        for chunk in c.generate_masks_stream(image_id=image_id, output_format=fmt, **OPTIONS):
            if messages == 0:
                timings.append(time.perf_counter())
            count, messages, size = count + len(chunk.masks), messages + 1, size + chunk.ByteSize()
        return count, messages, size

    rows = []
    with local_stack(load_model(args.model), gateways=0) as stack:
        image = png_image(480, 640, 5)
        for name, call in (("GenerateMasks", unary), ("GenerateMasksStream", stream)):
            port = free_port()
            command = [sys.executable, "-m", "samserve.client.cli", "serve", "--no-embedded", "--port", str(port)]
            command += ["--http-port", str(free_port()), "--metrics-port", str(free_port()), "--log-level", "WARNING"]
            command += ["--triton-url", stack.triton.grpc_url, "--redis-url", stack.redis.url]
            gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # a fresh process per call
            try:
                time.sleep(3)
                with SamClient(f"127.0.0.1:{port}", timeout_s=None) as c:
                    image_id = c.embed(image).image_id
                    c.generate_masks_pb(image_id=image_id, output_format=fmt, points_per_side=4)  # warm
                    with PeakRss(gateway.pid) as rss:
                        timings = [time.perf_counter()]
                        n, messages, size = call(c, image_id)
                        timings.append(time.perf_counter())
                    first = (timings[1] if len(timings) == 3 else timings[-1]) - timings[0]
                    rows.append((name, first, timings[-1] - timings[0], rss.peak - rss.base, messages))
            finally:
                gateway.terminate()
                gateway.wait(10)
    print(f"{args.model}, 640x480, 32x32 grid, every mask kept: {n} records, {size / 2**20:.1f} MiB as {args.format}")
    print(
        f"{'call':22s} {'first record s':>15s} {'last record s':>14s} {'gateway peak RSS +MiB':>22s} {'messages':>9s}"
    )
    for name, first, last, peak, messages in rows:
        print(f"{name:22s} {first:15.2f} {last:14.2f} {peak / 2**20:22.1f} {messages:9d}")
    print(
        f"stream/unary: first record {rows[1][1] / rows[0][1]:.2f}x, peak memory {rows[1][3] / max(rows[0][3], 1):.2f}x"
    )


if __name__ == "__main__":
    main()
