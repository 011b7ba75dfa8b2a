"""Query latency and memory of the retrieval index at 10k and 100k synthetic embeddings.

The index searches exactly (one matrix-vector product over all rows, then top-k), so the
cost should grow linearly with its size. This prints the median latency of single text
queries and of a batch of queries, the bytes held in memory and on disk, and the growth
ratio from the smallest to the largest index, then says whether an approximate index
(FAISS, HNSW) would be worth adding at these sizes.

    python benchmarks/retrieval_latency.py [--sizes 10000 100000] [--dim 768] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _bench import header, measure, summarize, table

from safegen.retrieval.retriever import RetrievalIndex


def build(n: int, dim: int, seed: int = 0) -> RetrievalIndex:
    g = torch.Generator().manual_seed(seed)
    index = RetrievalIndex(dim, model="synthetic")
    items = [{"id": f"/photos/{i:07d}.jpg", "kind": "image", "source": f"/photos/{i:07d}.jpg"} for i in range(n)]
    index.add(torch.randn(n, dim, generator=g), items)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=768, help="768 = ViT-L/14 projection")
    parser.add_argument("--queries", type=int, default=200, help="single queries per size and round")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    queries = torch.randn(args.queries, args.dim, generator=torch.Generator().manual_seed(1))
    indexes = {n: build(n, args.dim) for n in args.sizes}
    label = {n: f"{n // 1000}k" if n % 1000 == 0 else str(n) for n in args.sizes}
    single_all: dict[int, list[float]] = {n: [] for n in args.sizes}
    for index in indexes.values():
        for q in queries[:5]:
            index.search(q, args.k)  # warm-up

    def single(n: int):
        def call() -> float:
            times = []
            for q in queries:
                t0 = time.perf_counter()
                indexes[n].search(q, args.k)
                times.append(time.perf_counter() - t0)
            single_all[n] += times
            return statistics.median(times) * 1e3

        return call

    def batched(n: int):
        def call() -> float:
            t0 = time.perf_counter()
            indexes[n].search(queries, args.k)
            return (time.perf_counter() - t0) / len(queries) * 1e3

        return call

    calls = {f"{label[n]} 1 query": single(n) for n in args.sizes}
    calls |= {f"{label[n]} batched/q": batched(n) for n in args.sizes}
    small, large = args.sizes[0], args.sizes[-1]
    latency = measure(calls, baseline=f"{label[small]} 1 query", rounds=args.rounds)

    with tempfile.TemporaryDirectory() as tmp:

        def save(n: int):
            def call() -> float:
                t0 = time.perf_counter()
                indexes[n].save(Path(tmp) / str(n))
                return time.perf_counter() - t0

            return call

        def load(n: int):
            def call() -> float:
                t0 = time.perf_counter()
                RetrievalIndex.load(Path(tmp) / str(n))
                return time.perf_counter() - t0

            return call

        for n in args.sizes:
            save(n)()  # the first save creates the folder; the rounds overwrite it, as a re-index does
        io_calls = {f"{label[n]} save": save(n) for n in args.sizes} | {
            f"{label[n]} load": load(n) for n in args.sizes
        }
        io = measure(io_calls, baseline=f"{label[small]} save", rounds=args.rounds)
        disk = {n: sum(p.stat().st_size for p in (Path(tmp) / str(n)).iterdir()) for n in args.sizes}

    print(f"dim {args.dim}, k {args.k}, {args.queries} single queries per size and round (value: their median)")
    print(header(latency))
    print(table(latency, "ms", ".3f", ratio_label=f"x {label[small]} 1q"))
    growth = summarize(latency.values, f"{label[small]} batched/q")[f"{label[large]} batched/q"]
    single_growth = latency.stats[f"{label[large]} 1 query"]
    print(
        f"size x{large / small:.0f} -> single-query latency x{single_growth.ratio:.1f} "
        f"(rounds {single_growth.ratio_lo:.1f}-{single_growth.ratio_hi:.1f}), batched per query x{growth.ratio:.1f} "
        f"(rounds {growth.ratio_lo:.1f}-{growth.ratio_hi:.1f}); linear would be x{large / small:.0f}"
    )
    for n in args.sizes:
        all_q = single_all[n]
        ram = indexes[n].embeddings.element_size() * indexes[n].embeddings.nelement()
        p95 = statistics.quantiles(all_q, n=20)[-1]
        print(
            f"{label[n]}: p95 of all {len(all_q)} single queries {p95 * 1e3:.3f} ms; "
            f"RAM {ram / 2**20:.1f} MB, disk {disk[n] / 2**20:.1f} MB"
        )
    print(header(io))
    print(table(io, "s", ".3f", ratio_label=f"x {label[small]} save"))
    # Exact search is linear, so the size at which one query would take 100 ms follows from the largest
    # index; the slowest round gives the conservative bound.
    worst = single_growth.hi / 1e3
    n_100ms, n_100ms_worst = large * 0.1 / (single_growth.median / 1e3), large * 0.1 / worst
    if n_100ms_worst > large:
        verdict = (
            f"exact search stays under 100 ms per query up to ~{n_100ms:,.0f} items at {args.dim}-d on this machine "
            f"(~{n_100ms_worst:,.0f} from the slowest round); an approximate index (FAISS/HNSW) is not worth its "
            "recall loss and dependency below that"
        )
    else:
        verdict = (
            f"one query already takes up to {worst * 1e3:.0f} ms at {large:,} items; an approximate index "
            "(FAISS/HNSW), or batching queries, would pay off"
        )
    print(verdict)
    print(json.dumps({"latency_ms": latency.to_json(), "save_load_s": io.to_json(), "n_under_100ms": round(n_100ms)}))


if __name__ == "__main__":
    main()
