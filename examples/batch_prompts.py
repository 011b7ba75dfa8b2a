"""Run a prompt file through the batch runner from Python, interrupt-safe and resumable.

    python examples/batch_prompts.py [OUT]

Uses the shipped toy preset when its weights are installed (safegen/assets/toy/sd),
otherwise a tiny Stable Diffusion built in code; both run offline in seconds. The same
job from the shell, with the prompt file this script writes (same images, byte for byte;
tests/test_docs.py checks it):
`safegen batch OUT/prompts.jsonl --preset toy --steps 10 --batch-size 4 --device cpu --out OUT/run`.
Re-running either reuses the images whose inputs (prompt, settings, weights) are unchanged
and regenerates the rows that changed. The prompt file stays outside the run folder: a
run folder holds only what safegen writes (a folder of other files is refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safegen.jobs import BatchConfig, BatchRunner, read_manifest, summarize
from safegen.models.presets import ASSETS_DIR

PROMPTS = [
    {"id": "circle", "prompt": "a red circle on a white background", "seed": 1},
    {"id": "square", "prompt": "a blue square", "seed": 2, "n": 2},
    {"id": "night", "prompt": "a city at night", "negative_prompt": "blurry", "guidance": 5},
]


def main(out: Path = Path("outputs/example_batch")) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prompt_file = out / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps(row) + "\n" for row in PROMPTS), encoding="utf-8")
    run = out / "run"

    pipe, preset = None, None
    if (ASSETS_DIR / "toy" / "sd").is_dir():
        preset = "toy"
    else:
        from safegen.testing import tiny_sd_pipeline

        pipe = tiny_sd_pipeline()  # random tiny weights: noise images, real mechanics

    config = BatchConfig(prompts=prompt_file, out=run, preset=preset, steps=10, batch_size=4, device="cpu")
    result = BatchRunner(config, pipe=pipe).run()  # Ctrl-C stops after the current batch
    print(
        f"generated {result.generated}, reused {result.skipped}, changed {result.changed}, "
        f"{result.images_per_s:.1f} images/s"
    )
    for record in read_manifest(run):
        print(f"  {record['id']:7s} seed {record['seed']}  {record['file']}  sha256 {record['sha256'][:12]}")
    print(json.dumps(summarize(run), indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/example_batch"))
