"""`safegen serve` under load, against the batch runner on the same preset and batch size.

Both sides do the same work per image: the toy preset's safe pipeline, the toy classifier,
the blur policy and PNG encoding (the runner also writes files and a manifest; the server
base64-encodes and answers over HTTP). The server runs uvicorn on 127.0.0.1 in this
process; clients are asyncio httpx connections on loopback only.

1. Throughput and p50/p95 latency at concurrency 1, 4 and 16 (one image per request),
   server ``--max-batch B`` vs ``safegen batch --batch-size B``, interleaved in rounds with
   the shared method of ``_bench.py`` so both sides see the same machine load: median,
   min-max, and each side's ratio to the runner taken round by round. Goal (issue 16): the
   server at concurrency 16 reaches >= 90% of the runner's images/s.
2. 10x overload: ten times as many clients as the server can hold (queue + one batch),
   each re-sending at once whenever refused, for a fixed time. Checked: the server stays
   up, every accepted request is answered with its image (none lost, none timed out), the
   excess gets 429 + Retry-After, and the process's memory stays bounded.

Bounded in count and time: ``--requests`` per point, ``--rounds``, ``--overload-seconds``.

    HF_HUB_OFFLINE=1 python benchmarks/serve_load.py [--batch 4 --steps 10 --requests 16 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _bench import header, measure, table

COLOURS = ("red", "green", "blue", "yellow", "purple")
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ("white", "gray", "black")


def prompts(n: int, offset: int = 0) -> list[str]:
    """Distinct toy-world prompts (45 combinations, then numbered), so no prompt cache helps either side."""
    out = []
    for i in range(offset, offset + n):
        c, s, b = COLOURS[i % 5], SHAPES[(i // 5) % 3], BACKGROUNDS[(i // 15) % 3]
        out.append(f"a {c} {s} on a {b} background" + (f", take {i // 45}" if i >= 45 else ""))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def drive(url: str, texts: list[str], concurrency: int, steps: int, seed0: int) -> dict:
    """Send one request per prompt with ``concurrency`` in flight; latency per request."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    todo = list(enumerate(texts))

    async def worker(client: httpx.AsyncClient) -> None:
        while todo:
            i, text = todo.pop(0)
            t = time.perf_counter()
            r = await client.post(
                "/v1/images/generations", json={"prompt": text, "seed": seed0 + i, "steps": steps}, timeout=600
            )
            latencies.append(time.perf_counter() - t)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "images_per_s": statuses.get(200, 0) / wall,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "statuses": statuses,
    }


def run_runner(engine, texts: list[str], batch: int, steps: int, guidance: float, seed0: int, out: Path) -> dict:
    """`safegen batch` on the server's own pipeline and classifier (same weights, same policy)."""
    from safegen.jobs import BatchConfig, BatchRunner

    src = out / "prompts.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    src.write_text(
        "".join(json.dumps({"prompt": t, "id": f"p{i}", "seed": seed0 + i}) + "\n" for i, t in enumerate(texts))
    )
    cfg = BatchConfig(
        prompts=src, out=out / "run", steps=steps, guidance=guidance, batch_size=batch,
        device="cpu", check="toy", on_unsafe="blur", model="toy",
    )  # fmt: skip
    start = time.perf_counter()
    result = BatchRunner(cfg, pipe=engine.pipe, classifier=engine.classifier, handle_signals=False).run()
    wall = time.perf_counter() - start
    return {"images_per_s": result.generated / wall, "seconds_per_batch": wall / max(1, -(-result.generated // batch))}


async def overload(url: str, clients: int, seconds: float, steps: int) -> dict:
    """``clients`` connections re-sending at once when refused, for ``seconds``; every answer counted."""
    import httpx

    accepted_ok = accepted_bad = refused = errors = 0
    retry_after: set[str] = set()
    stop_at = time.monotonic() + seconds
    sent = 0

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        nonlocal accepted_ok, accepted_bad, refused, errors, sent
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            sent += 1
            try:
                r = await client.post(
                    "/v1/images/generations",
                    json={"prompt": prompts(1, k)[0], "seed": k * 1000 + n, "steps": steps},
                    timeout=600,
                )
            except httpx.HTTPError:
                errors += 1
                continue
            if r.status_code == 429:
                refused += 1
                retry_after.add(r.headers.get("Retry-After", "missing"))
                await asyncio.sleep(0.05)  # an impatient client: ignores Retry-After
            elif r.status_code == 200 and r.json()["data"][0].get("b64_json"):
                accepted_ok += 1
            else:
                accepted_bad += 1

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        await asyncio.gather(*(worker(client, k) for k in range(clients)))
    return {
        "sent": sent,
        "accepted_ok": accepted_ok,
        "accepted_not_ok": accepted_bad,
        "refused_429": refused,
        "transport_errors": errors,
        "retry_after_values": sorted(retry_after),
    }


class MemorySampler(threading.Thread):
    """Samples this process's RSS every 0.1 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.proc.memory_info().rss)
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="server --max-batch and runner --batch-size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=16, help="requests per point (concurrency 1: half)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--queue-size", type=int, default=8, help="server queue in the overload check")
    parser.add_argument("--overload-seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from safegen.serve import ServeConfig, create_app, load_image_engine
    from safegen.serve.server import BackgroundServer

    base = dict(preset="toy", device="cpu", check="toy", on_unsafe="blur", steps=args.steps, guidance=args.guidance)
    engine = load_image_engine(ServeConfig(**base))
    concurrencies = (1, 4, 16)
    served: dict[int, list[dict]] = {c: [] for c in concurrencies}
    offsets = itertools.count(1000, 1000)  # fresh prompts and seeds for every call
    # Warm up both paths once (first calls allocate).
    cfg = ServeConfig(**base, max_batch=args.batch, max_wait_ms=args.max_wait_ms, queue_size=64, timeout_s=600)
    with tempfile.TemporaryDirectory() as tmp, BackgroundServer(create_app(cfg, image_engine=engine)) as srv:
        asyncio.run(drive(srv.url, prompts(args.batch), args.batch, args.steps, 0))
        run_runner(engine, prompts(args.batch), args.batch, args.steps, args.guidance, 0, Path(tmp) / "warm")

        def server_at(c: int):
            def call() -> float:
                offset = next(offsets)
                n = args.requests // 2 if c == 1 else args.requests
                res = asyncio.run(drive(srv.url, prompts(n, offset), c, args.steps, offset))
                served[c].append(res)
                return res["images_per_s"]

            return call

        def runner() -> float:
            offset = next(offsets)
            texts = prompts(args.requests, offset)
            out = Path(tmp) / str(offset)
            return run_runner(engine, texts, args.batch, args.steps, args.guidance, offset, out)["images_per_s"]

        calls = {f"runner b={args.batch}": runner} | {f"server c={c}": server_at(c) for c in concurrencies}
        result = measure(
            calls,
            baseline=f"runner b={args.batch}",
            rounds=args.rounds,
            on_round=lambda r, v: print(f"round {r}: " + ", ".join(f"{k} {x:.2f}" for k, x in v.items()), flush=True),
        )

    print(f"\nthroughput (batch {args.batch}, {args.steps} steps, 32x32, images/s)")
    print(header(result))
    print(table(result, "images/s", ".2f", ratio_label="x runner"))
    latency = {}
    for c in concurrencies:
        p50s, p95s = [x["p50"] for x in served[c]], [x["p95"] for x in served[c]]
        latency[c] = {"p50": statistics.median(p50s), "p95": statistics.median(p95s)}
        print(
            f"server c={c}: latency p50 {latency[c]['p50']:.2f} s ({min(p50s):.2f}-{max(p50s):.2f}), "
            f"p95 {latency[c]['p95']:.2f} s ({min(p95s):.2f}-{max(p95s):.2f}); statuses "
            f"{[x['statuses'] for x in served[c]]}"
        )
    c16 = result.stats["server c=16"]
    print(f"server c=16 / runner: {c16.ratio:.2f} (rounds {c16.ratio_lo:.2f}-{c16.ratio_hi:.2f}); goal >= 0.90")

    # ---- 10x overload
    capacity = args.queue_size + args.batch
    clients = 10 * capacity
    cfg = ServeConfig(**base, max_batch=args.batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                      timeout_s=600)  # fmt: skip
    sampler = MemorySampler()
    with BackgroundServer(create_app(cfg, image_engine=engine)) as srv:
        import httpx

        before = sampler.proc.memory_info().rss
        sampler.start()
        t0 = time.perf_counter()
        over = asyncio.run(overload(srv.url, clients, args.overload_seconds, args.steps))
        elapsed = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        health = httpx.get(srv.url + "/healthz").json()
        metrics = httpx.get(srv.url + "/metrics").text
    peak = max(sampler.samples)
    half = sampler.samples[len(sampler.samples) // 2 :]
    print(
        f"\n10x overload: {clients} clients for {elapsed:.0f} s (capacity {capacity}: queue {args.queue_size} + batch)"
    )
    print(json.dumps(over))
    print(f"health after: {health}")
    print(
        f"RSS before {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, "
        f"second half max {max(half) / 2**20:.0f} MiB, end {sampler.samples[-1] / 2**20:.0f} MiB"
    )
    served_429 = [line for line in metrics.splitlines() if 'code="429"' in line]
    print("server count of 429s:", served_429)
    ok = (
        health["status"] == "ok"
        and over["accepted_not_ok"] == 0
        and over["transport_errors"] == 0
        and over["refused_429"] > 0
        and "missing" not in over["retry_after_values"]
    )
    print("overload check:", "PASS" if ok else "FAIL")
    print(json.dumps({"throughput": result.to_json(), "latency": latency, "overload": over}, default=str))


if __name__ == "__main__":
    main()
