"""Benchmark of the REST service: paragraphs per second and p50/p95/p99 latency.

Starts `lichang serve` on a free loopback port with the given model, then sends
the seed articles — one article per request, and batches of articles — at
several concurrency levels, and prints a table. Not a test: numbers depend on
the machine.

    python scripts/bench_service.py [--model DIR] [--requests 24] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from lichang.config import DEFAULT_MODEL_DIR

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_level(client: httpx.Client, path: str, bodies: list[dict], paragraphs_per_body: list[int],
              concurrency: int) -> dict:
    def one(i: int) -> float:
        started = time.perf_counter()
        response = client.post(path, json=bodies[i % len(bodies)])
        response.raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(max(len(bodies) * 3, concurrency * 3))))
    elapsed = time.perf_counter() - started
    n = len(latencies)
    paragraphs = sum(paragraphs_per_body[i % len(bodies)] for i in range(n))
    return {"requests": n, "paragraphs_per_s": paragraphs / elapsed, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99),
            "mean": statistics.mean(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()

    texts = [p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))]
    singles = [{"text": t, "brand": "小米", "aliases": ["小米汽车", "雷军"]} for t in texts]
    counts = [sum(1 for line in t.splitlines() if line.strip()) for t in texts]
    batch = [{"articles": singles}]
    port = free_port()
    env = dict(os.environ, LICHANG_MAX_QUEUE_PARAGRAPHS="100000")
    server = subprocess.Popen([sys.executable, "-m", "lichang.cli", "serve", "--model", args.model,
                               "--port", str(port)], env=env)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the service did not become ready in 180 s")
        client.post("/v1/analyze", json=singles[0]).raise_for_status()  # warm-up
        print(f"model {args.model}; {len(texts)} seed articles, {sum(counts)} paragraphs; "
              f"{os.cpu_count()} CPUs")
        print(f"{'mode':<22}{'conc.':>6}{'requests':>9}{'para/s':>9}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}")
        for mode, path, bodies, sizes in (("single article", "/v1/analyze", singles, counts),
                                          ("batch of 4 articles", "/v1/analyze/batch", batch, [sum(counts)])):
            for concurrency in args.concurrency:
                r = run_level(client, path, bodies, sizes, concurrency)
                print(f"{mode:<22}{concurrency:>6}{r['requests']:>9}{r['paragraphs_per_s']:>9.1f}"
                      f"{r['p50']:>8.2f}{r['p95']:>8.2f}{r['p99']:>8.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
