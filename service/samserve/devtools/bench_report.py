"""The `samserve bench` report: a Markdown table and PNG plots (latency percentiles and
throughput against concurrency, latency histograms)."""

from __future__ import annotations

from pathlib import Path

from samserve.devtools.loadgen import RunResult


def markdown(results: list[RunResult], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| rpc | cache | mode | concurrency | ok | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "-"
        lines.append(
            f"| {r.rpc} | {r.cache} | {r.mode} | {r.concurrency} | {r.ok} | {errors} | {r.throughput:.2f} | "
            f"{r.percentile(50) * 1e3:.1f} | {r.percentile(95) * 1e3:.1f} | {r.percentile(99) * 1e3:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: list[RunResult], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.rpc, r.cache), []).append(r)
    paths = []

    def save(fig, path: Path) -> Path:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path

    fig, ax = plt.subplots(figsize=(8, 5))
    for (rpc, cache), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.concurrency)
        xs = [r.concurrency for r in rs]
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            ax.plot(xs, [r.percentile(q) * 1e3 for r in rs], style, marker="o", label=f"{rpc} {cache} p{q}")
    ax.set(
        xlabel="concurrency",
        ylabel="latency (ms)",
        title="Latency percentiles vs concurrency",
        xscale="log",
        yscale="log",
    )
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    paths.append(save(fig, out / "latency_vs_concurrency.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for (rpc, cache), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.concurrency)
        ax.plot([r.concurrency for r in rs], [r.throughput for r in rs], marker="o", label=f"{rpc} {cache}")
    ax.set(xlabel="concurrency", ylabel="throughput (req/s)", title="Throughput vs concurrency", xscale="log")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    paths.append(save(fig, out / "throughput_vs_concurrency.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    for (rpc, cache), rs in groups.items():
        top = max(rs, key=lambda r: r.concurrency)
        if top.latencies_s:
            ax.hist([v * 1e3 for v in top.latencies_s], bins=40, alpha=0.5, label=f"{rpc} {cache} c={top.concurrency}")
    ax.set(xlabel="latency (ms)", ylabel="requests", title="Latency histogram (highest concurrency)")
    ax.legend(fontsize=8)
    paths.append(save(fig, out / "latency_histogram.png"))
    return paths


def write_report(results: list[RunResult], out: Path, title: str) -> tuple[Path, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    images = plots(results, out)
    md = markdown(results, title) + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in images) + "\n"
    report = out / "report.md"
    report.write_text(md)
    return report, images
