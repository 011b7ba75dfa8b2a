"""Training data loading at ViT-L/14 preprocessing: can decoding keep up with a GPU step?

Goal (issue 15): one 160k-quadruple epoch in <= 15 min on one H100 needs about 178
quadruples/s, i.e. about 356 images/s (a safe and an unsafe image per quadruple). This
measures quadruples/s through safegen_train's own data path (``load_records`` ->
``PairDataset`` -> ``Collator`` with CLIP's tokenizer and openai/clip-vit-large-patch14's
image processor, built in code -> ``DataLoader`` with the training ``ShardedBatchSampler``),
with 0, 1 and 2 worker processes, decoding every image vs reading the pre-processed cache of
``safegen-train data preprocess`` (``preprocessed_cache``).

Images are generated procedurally in a temporary folder at the sizes Safe-CLIP's ViSU data
have: safe images like COCO photos (640x480 JPEG, quality 90) and unsafe images like Stable
Diffusion outputs (512x512 PNG), both textured so they compress like photographs.

    python benchmarks/dataloader_throughput.py --rounds 5            # 2 cores: 0/1/2 workers

Each call is one pass over the data (the first batch, which includes starting the workers,
is not timed). Configurations run interleaved in rounds (``_bench.py``); ratios are per
round against decoding in the main process (``decode-w0``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _bench import header, measure, table

TARGET_QUADRUPLES_PER_S = 160_000 / (15 * 60)  # one 160k-quadruple epoch in 15 minutes


def _texture(rng, h: int, w: int, seed: int):
    """A photo-like RGB picture: smooth gradients, a few shapes, fine grain (compresses like a photo)."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [128 + 100 * np.sin(xx / (40 + seed % 17) + c) * np.cos(yy / (55 + seed % 13) - c) for c in (0.0, 1.3, 2.6)],
        -1,
    )
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, 120)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[mask] = rng.integers(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_data(folder: Path, n: int) -> Path:
    """``n`` quadruples: safe 640x480 JPEG (COCO-like), unsafe 512x512 PNG (SD-like)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(_texture(rng, 480, 640, i)).save(folder / f"safe_{i}.jpg", quality=90)
        Image.fromarray(_texture(rng, 512, 512, i + 7)).save(folder / f"unsafe_{i}.png")
        lines.append(
            json.dumps(
                {
                    "safe_text": f"a dog running on a beach number {i}",
                    "unsafe_text": f"a bloody dog attacking a man on a beach number {i}",
                    "safe_image": f"safe_{i}.jpg",
                    "unsafe_image": f"unsafe_{i}.png",
                }
            )
        )
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def vit_l_processor():
    """openai/clip-vit-large-patch14's CLIPImageProcessor (its public preprocessor_config), built in code."""
    from transformers import CLIPImageProcessor

    from safegen_train.model import OPENAI_MEAN, OPENAI_STD

    return CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )


def one_pass(dataset, collate, batch_size: int, workers: int, cpu_ms: list[float] | None = None) -> float:
    """Quadruples/s of one pass over ``dataset`` as training's DataLoader feeds it (first batch untimed).

    With ``workers == 0`` the work is this process's, so its CPU time per image is appended to
    ``cpu_ms``: a figure load does not inflate the way wall time is, from which the cores a
    target needs follow.
    """
    import torch
    from torch.utils.data import DataLoader

    from safegen_train.data import ShardedBatchSampler

    sampler = ShardedBatchSampler(len(dataset), batch_size, seed=0)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    n, t0, c0 = 0, None, 0.0
    for batch in loader:
        if t0 is None:
            t0, c0 = time.perf_counter(), time.process_time()  # workers started, first batch in hand
            continue
        n += batch["safe_image_pixels"].shape[0]
    if t0 is None or n == 0:
        raise SystemExit("need at least two batches: raise --quadruples or lower --batch-size")
    rate = n / (time.perf_counter() - t0)
    if workers == 0 and cpu_ms is not None:
        cpu_ms.append(1000 * (time.process_time() - c0) / (2 * n))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quadruples", type=int, default=96, help="quadruples per pass (2 images each)")
    parser.add_argument("--batch-size", type=int, default=16, help="quadruples per batch")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to compare")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a published figure)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the main process")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args()

    import torch

    from safegen import create_clip_tokenizer
    from safegen_train.data import Collator, PairDataset, load_records
    from safegen_train.pixel_cache import PreprocessedImages
    from safegen_train.preprocess import preprocess_images

    torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    processor = vit_l_processor()
    collate = Collator(create_clip_tokenizer(), processor, 77)
    with tempfile.TemporaryDirectory(prefix="safegen-dataload-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        records = load_records(make_data(tmp / "data", args.quadruples))
        sizes = (
            [Path(r.safe_image).stat().st_size for r in records],
            [Path(r.unsafe_image).stat().st_size for r in records],
        )
        paths = [p for r in records for p in (r.safe_image, r.unsafe_image)]
        pre = preprocess_images(paths, tmp / "cache", processor, workers=max(workers))
        decode_ds = PairDataset(records)
        cached_ds = PairDataset(records)
        found, total = cached_ds.use_preprocessed(PreprocessedImages(tmp / "cache", processor))
        assert found == total, "every image should be in the cache"

        calls, cpu = {}, {"decode": [], "cached": []}
        for w in workers:
            calls[f"decode-w{w}"] = lambda w=w: one_pass(decode_ds, collate, args.batch_size, w, cpu["decode"])
        for w in workers:
            calls[f"cached-w{w}"] = lambda w=w: one_pass(cached_ds, collate, args.batch_size, w, cpu["cached"])
        baseline = f"decode-w{workers[0]}"
        result = measure(calls, baseline=baseline, rounds=args.rounds)

    kib = [statistics.median(s) / 1024 for s in sizes]
    print(
        f"{args.quadruples} quadruples/pass, batch {args.batch_size}; safe 640x480 JPEG (median {kib[0]:.0f} KiB), "
        f"unsafe 512x512 PNG (median {kib[1]:.0f} KiB); ViT-L/14 preprocessing (224 px bicubic, center crop)"
    )
    print(header(result))
    print(table(result, "quadruples/s", ".1f", ratio_label=f"x {baseline}"))
    print(
        f"target: {TARGET_QUADRUPLES_PER_S:.0f} quadruples/s = {2 * TARGET_QUADRUPLES_PER_S:.0f} images/s "
        "(160k quadruples in 15 min)"
    )
    for name, s in result.stats.items():
        verdict = "keeps up" if s.median >= TARGET_QUADRUPLES_PER_S else "too slow"
        print(f"{name:<12} {2 * s.median:8.0f} images/s  {s.median / TARGET_QUADRUPLES_PER_S:6.2f}x target  {verdict}")
    for w in workers:
        c, d = result.values[f"cached-w{w}"], result.values[f"decode-w{w}"]
        ratios = sorted(cs / ds for cs, ds in zip(c, d, strict=True))
        print(
            f"cache vs decoding, {w} worker(s): {statistics.median(ratios):.1f}x "
            f"(per-round {ratios[0]:.1f}-{ratios[-1]:.1f})"
        )
    for kind, ms in cpu.items():
        if ms:
            med = statistics.median(ms)
            print(
                f"{kind}: {med:.2f} CPU ms per image in the main process (rounds {min(ms):.2f}-{max(ms):.2f}); "
                f"{2 * TARGET_QUADRUPLES_PER_S:.0f} images/s need {2 * TARGET_QUADRUPLES_PER_S * med / 1000:.1f} "
                "such cores"
            )
    rate = pre.processed / max(pre.seconds, 1e-9)
    print(
        f"one-time `data preprocess` ({max(workers)} worker(s)): {rate:.0f} images/s, "
        f"so 320k images take about {320_000 / rate / 3600:.1f} h on this machine"
    )
    if args.json:
        out = result.to_json()
        out["preprocess_images_per_s"] = rate
        out["cpu_ms_per_image"] = cpu
        sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
