"""Two processes (torchrun, gloo on the CPU) train the same weights as one process holding
the same global batch, with InfoNCE negatives gathered across processes.

Without ``loss.gather_negatives`` each process would contrast only its own half-batch
(fewer negatives, a different loss), so the weights would differ; LoRA dropout is off here
because each process draws its own masks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from test_train_fixtures import make_clip_folder, make_jsonl


def _config(root, clip, train, out):
    path = root / f"{out}.json"
    path.write_text(
        f'{{"model": "{clip}", "train_data": "{train}", "output_dir": "{root / out}", "batch_size": 4, "epochs": 2,'
        ' "lr": 0.01, "lora_dropout": 0.0, "max_text_length": 16, "cpu": true, "save_every_steps": 0,'
        ' "export_on_finish": false, "loss": {"gather_negatives": true}}'
    )
    return path


@pytest.mark.slow  # two torchrun workers + one process: ~45 s on the shared 2-core machine
def test_two_processes_match_one_process(tmp_path):
    from safetensors.torch import load_file

    clip = make_clip_folder(tmp_path / "clip")
    train = make_jsonl(tmp_path / "data", 8)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    one = subprocess.run(
        [sys.executable, "-m", "safegen_train.cli", "fit", "-c", str(_config(tmp_path, clip, train, "one"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two_cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "safegen_train.cli",
        "fit",
        "-c",
        str(_config(tmp_path, clip, train, "two")),
        "-v",
    ]
    two = subprocess.run(two_cmd, env=env, capture_output=True, text=True, timeout=300)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch built without gloo")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stderr  # really distributed, not two independent runs
    a = load_file(str(tmp_path / "one" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # the runs trained (not two untouched copies)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
