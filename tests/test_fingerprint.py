"""Content fingerprints: bytes decide, the cache never serves a stale hash, folders cannot loop."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from safegen.core import fingerprint as fpm


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEGEN_CACHE", str(tmp_path / "cache"))
    fpm._memory.clear()


def test_file_fingerprint_is_sha256_and_cached(tmp_path, monkeypatch):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"abc" * 1000)
    assert fpm.fingerprint_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    cached = json.loads(fpm.cache_file().read_text())
    assert list(cached.values()) == [hashlib.sha256(b"abc" * 1000).hexdigest()]
    # a cache hit does not read the file again
    calls = []
    monkeypatch.setattr(fpm, "hash_file", lambda p: calls.append(p) or "x")
    fpm._memory.clear()
    assert fpm.fingerprint_file(f) == hashlib.sha256(b"abc" * 1000).hexdigest() and not calls


def test_same_size_rewrite_changes_the_fingerprint(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"\x00" * 64)
    first = fpm.fingerprint_file(f)
    f.write_bytes(b"\x01" * 64)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # re-trained: same size, new mtime
    assert fpm.fingerprint_file(f) != first


def test_folder_fingerprint_tracks_contents_and_names_and_skips_loops(tmp_path):
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "w.safetensors").write_bytes(b"1234")
    (model / "config.json").write_text("{}")
    (model / "unet" / "loop").symlink_to(model, target_is_directory=True)
    (model / ".safegen.lock").write_text("")  # lock files and hidden files do not count
    a = fpm.fingerprint_source(model)
    (model / ".hidden").write_text("x")
    assert fpm.fingerprint_source(model) == a
    (model / "unet" / "w.safetensors").write_bytes(b"1235")
    b = fpm.fingerprint_source(model)
    assert b != a
    (model / "unet" / "w.safetensors").rename(model / "unet" / "v.safetensors")
    assert fpm.fingerprint_source(model) not in (a, b)


def test_hub_blob_name_is_used_without_reading(tmp_path, monkeypatch):
    digest = hashlib.sha256(b"weights").hexdigest()
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "snap" / "model.safetensors"
    link.parent.mkdir()
    link.symlink_to(blob)
    monkeypatch.setattr(fpm, "hash_file", lambda p: pytest.fail("read a blob whose name is its hash"))
    assert fpm.fingerprint_file(link) == digest


def test_sources_none_ids_and_assets():
    assert fpm.fingerprint_source(None) is None
    assert fpm.fingerprint_source("nobody/not-cached-model") == "id:nobody/not-cached-model"
    assert len(fpm.fingerprint_source("@assets/toy/safe_clip")) == 64
    assert fpm.short(None) == "none" and fpm.short("a" * 64) == "a" * 12


def test_module_and_pipeline_fingerprints_follow_the_weights():
    import torch

    from safegen.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    base, safe = fpm.fingerprint_pipeline(pipe)
    assert safe is None and len(base) == 64
    assert fpm.fingerprint_pipeline(tiny_sd_pipeline())[0] == base  # same seed, same weights
    with torch.no_grad():
        next(pipe.unet.parameters()).add_(1.0)
    assert fpm.fingerprint_pipeline(pipe)[0] != base
    m = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert len(fpm.fingerprint_module(m)) == 64
