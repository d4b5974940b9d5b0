"""`samserve bench` against the running gateway: a sweep, a Markdown report, three PNG plots."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from samserve.devtools.sample_images import encode, synthetic_image


def test_bench_sweep_writes_report_and_plots(gateway, tmp_path):
    image = tmp_path / "img.png"
    image.write_bytes(encode(synthetic_image(120, 160, seed=91)))
    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "samserve.client.cli",
            "bench",
            str(image),
            "--server",
            gateway.target,
            "--rpc",
            "segment,embed",
            "--cache",
            "hit,miss",
            "--concurrency",
            "1,2",
            "--duration",
            "0.7",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| segment") or line.startswith("| embed")]
    assert len(rows) == 8  # 2 rpcs x 2 cache modes x 2 concurrencies
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[4]) > 0 and cells[5] == "-", row  # requests succeeded, no errors
        assert float(cells[6]) > 0
    for name in ("latency_vs_concurrency", "throughput_vs_concurrency", "latency_histogram"):
        assert Image.open(out / f"{name}.png").size[0] > 400


def test_open_loop_counts_latency_from_the_schedule(gateway):
    import asyncio

    from samserve.devtools.loadgen import LoadGenerator

    gen = LoadGenerator(gateway.target, encode(synthetic_image(80, 80, seed=92)), (40, 40))
    result = asyncio.run(gen.run("segment", "hit", 4, 1.0, mode="open", rate=20))
    assert result.ok > 5 and set(result.errors) <= {"SHED_BY_CLIENT"}
    assert result.percentile(50) > 0
