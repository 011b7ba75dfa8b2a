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
import statistics
import tempfile
import time
from pathlib import Path

import torch

from safegen.retrieval import RetrievalIndex


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
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    queries = torch.randn(args.queries, args.dim, generator=torch.Generator().manual_seed(1))
    print(f"dim {args.dim}, k {args.k}, {args.queries} queries, threads={torch.get_num_threads()}")
    columns = [("items", 8), ("1 query ms", 11), ("p95 ms", 8), ("batch/q ms", 11), ("RAM MB", 8), ("disk MB", 8)]
    columns += [("save s", 7), ("load s", 7)]
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    rows = []
    for n in args.sizes:
        index = build(n, args.dim)
        for q in queries[:5]:
            index.search(q, args.k)  # warm-up
        single = []
        for q in queries:
            t0 = time.perf_counter()
            index.search(q, args.k)
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(queries, args.k)
        batched = (time.perf_counter() - t0) / len(queries)
        ram = index.embeddings.element_size() * index.embeddings.nelement()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            index.save(tmp)
            save_s = time.perf_counter() - t0
            disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
            t0 = time.perf_counter()
            RetrievalIndex.load(tmp)
            load_s = time.perf_counter() - t0
        med = statistics.median(single)
        p95 = statistics.quantiles(single, n=20)[-1]
        rows.append((n, med))
        print(
            f"{n:>8} {med * 1e3:11.3f} {p95 * 1e3:8.3f} {batched * 1e3:11.3f} {ram / 2**20:8.1f} "
            f"{disk / 2**20:8.1f} {save_s:7.2f} {load_s:7.2f}"
        )
    (n0, t0_), (n1, t1_) = rows[0], rows[-1]
    print(f"size x{n1 / n0:.0f} -> single-query latency x{t1_ / t0_:.1f} (linear would be x{n1 / n0:.0f})")
    # Exact search is linear, so the size at which one query would take 100 ms follows from the largest run.
    n_100ms = n1 * 0.1 / t1_
    if n_100ms > n1:
        verdict = (
            f"exact search stays interactive up to ~{n_100ms:,.0f} items at {args.dim}-d on this machine; "
            "an approximate index (FAISS/HNSW) is not worth its recall loss and dependency below that"
        )
    else:
        verdict = (
            f"one query already takes {t1_ * 1e3:.0f} ms at {n1:,} items; an approximate index (FAISS/HNSW), "
            "or batching queries, would pay off"
        )
    print(verdict)


if __name__ == "__main__":
    main()
