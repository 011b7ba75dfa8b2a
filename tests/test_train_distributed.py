"""Two processes (torchrun, gloo on the CPU) train the same weights as one process holding
the same global batch, with InfoNCE negatives gathered across processes, and compute the
same validation: the reference-embedding cache and the validation pass are sharded across
the processes (``embed_batch_size`` 2 gives several batches to split, an odd count included).

Without ``loss.gather_negatives`` each process would contrast only its own half-batch
(fewer negatives, a different loss), so the weights would differ; LoRA dropout is off here
because each process draws its own masks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import make_clip_folder, make_jsonl


def _config(root, clip, train, val, out):
    path = root / f"{out}.json"
    path.write_text(
        f'{{"model": "{clip}", "train_data": "{train}", "val_data": "{val}", "output_dir": "{root / out}",'
        ' "batch_size": 4, "epochs": 2, "embed_batch_size": 2,'
        ' "lr": 0.01, "lora_dropout": 0.0, "max_text_length": 16, "cpu": true, "save_every_steps": 0,'
        ' "export_on_finish": false, "loss": {"gather_negatives": true}}'
    )
    return path


@pytest.mark.slow  # two torchrun workers + one process: ~45 s on the shared 2-core machine
def test_two_processes_match_one_process(tmp_path):
    from safetensors.torch import load_file

    clip = make_clip_folder(tmp_path / "clip")
    train = make_jsonl(tmp_path / "data", 8)
    val = make_jsonl(tmp_path / "data", 6, name="val.jsonl", offset=20)  # 3 embedding batches, 2 loss batches
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    one = subprocess.run(
        [sys.executable, "-m", "safegen_train.cli", "fit", "-c", str(_config(tmp_path, clip, train, val, "one"))],
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
        str(_config(tmp_path, clip, train, val, "two")),
        "-v",
    ]
    two = subprocess.run(two_cmd, env=env, capture_output=True, text=True, timeout=300)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("torch built without gloo")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stderr  # really distributed, not two independent runs
    # each process computed its share: the passes report both processes
    assert re.search(r"cached 8 reference embeddings in [\d.]+s \(2 process", two.stderr), two.stderr[-2000:]
    assert re.search(r"validated 6 records in [\d.]+s \(2 process", two.stderr)
    a = load_file(str(tmp_path / "one" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # the runs trained (not two untouched copies)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    # the sharded validation is the one-process validation: same table, same losses
    va = json.loads((tmp_path / "one" / "state.json").read_text())["last_validation"]
    vb = json.loads((tmp_path / "two" / "state.json").read_text())["last_validation"]
    assert va["recall"] == vb["recall"] and set(va["recall"]) == {"S-V", "S-G", "U-V", "U-G"}
    assert va["loss"].keys() == vb["loss"].keys()
    for k in va["loss"]:
        assert vb["loss"][k] == pytest.approx(va["loss"][k], rel=1e-4, abs=1e-6), k
