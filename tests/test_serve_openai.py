"""`safegen serve --preset toy` on a real loopback socket, driven by the official `openai` client, unchanged."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from safegen.serve import ServeConfig, create_app, load_caption_engine, load_image_engine  # noqa: E402
from safegen.serve.server import BackgroundServer as LoopbackServer  # noqa: E402
from safegen.serve.server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def toy_engines(one_thread):
    config = ServeConfig(preset="toy", device="cpu")
    return load_image_engine(config), load_caption_engine(config)


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def test_openai_client_unchanged_against_toy_server(toy_engines):
    images, captions = toy_engines
    config = ServeConfig(preset="toy", steps=4, max_wait_ms=5, api_keys=["sk-local-test"])
    with LoopbackServer(create_app(config, image_engine=images, caption_engine=captions)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-local-test", max_retries=0)
        models = client.models.list()
        assert [m.id for m in models.data] == ["toy", "toy-captioner"]
        response = client.images.generate(
            model="toy",
            prompt="a red circle covered in blood",
            n=2,
            size="32x32",
            response_format="b64_json",
            extra_body={"seed": 4, "steps": 4, "guidance": 5.0, "negative_prompt": ""},
        )
        assert len(response.data) == 2
        first = response.data[0]
        assert decode(first.b64_json).size == (32, 32)
        # safegen's fields come through the client as extras
        assert response.model_extra["safe_encoder"] == "toy/safe_clip"
        assert response.model_extra["classifier"] == "toy"
        assert [d.model_extra["seed"] for d in response.data] == [4, 5]
        for d in response.data:
            assert d.model_extra["decision"] in ("pass", "blur")
            assert d.model_extra["decision"] == ("blur" if d.model_extra["safety"]["unsafe"] else "pass")
            assert set(d.model_extra["safety"]["labels"]) >= {"blood", "fire", "gun"}
        # The same request through plain HTTP gives the same pixels (seeded, batch-independent).
        again = httpx.post(
            srv.url + "/v1/images/generations",
            json={"prompt": "a red circle covered in blood", "n": 1, "size": "32x32", "seed": 4, "steps": 4,
                  "guidance": 5.0},
            headers={"Authorization": "Bearer sk-local-test"},
            timeout=60,
        ).json()  # fmt: skip
        assert np.array_equal(np.asarray(decode(again["data"][0]["b64_json"])), np.asarray(decode(first.b64_json)))

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError, match="size 1024x1024 is not served"):
            client.images.generate(model="toy", prompt="a cat", size="1024x1024")
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.images.generate(model="dall-e-3", prompt="a cat")

        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (220, 30, 30)).save(buf, format="PNG")
        cap = httpx.post(
            srv.url + "/v1/captions",
            files={"file": ("red.png", buf.getvalue(), "image/png")},
            headers={"Authorization": "Bearer sk-local-test"},
            timeout=60,
        )
        assert cap.status_code == 200 and cap.json()["caption"].strip()
        assert cap.json()["model"] == "toy-captioner"


def test_openai_client_sees_429_as_rate_limit(toy_engines):
    images, _ = toy_engines
    gate = threading.Event()
    inner = images.render

    def gated(jobs):
        gate.wait(30)
        return inner(jobs)

    images.render = gated
    try:
        config = ServeConfig(preset="toy", steps=2, max_wait_ms=0, queue_size=1, max_n=1)
        with LoopbackServer(create_app(config, image_engine=images)) as srv:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
            results: list = []

            def call(prompt):
                results.append(client.images.generate(prompt=prompt, size="32x32", extra_body={"seed": 1}))

            threads = [threading.Thread(target=call, args=(p,)) for p in ("running", "queued")]
            for t in threads:
                t.start()
                time.sleep(0.5)  # the first occupies the model, the second the only queue slot
            with pytest.raises(openai.RateLimitError) as info:
                client.images.generate(prompt="refused", size="32x32")
            assert int(info.value.response.headers["Retry-After"]) >= 1
            gate.set()
            for t in threads:
                t.join(60)
            assert len(results) == 2 and all(len(r.data) == 1 for r in results)
    finally:
        gate.set()
        images.render = inner


def test_cli_serve_toy_end_to_end(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "SAFEGEN_API_KEYS": "env-key",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "safegen.cli.main", "serve", "--preset", "toy", "--port", str(port)]
    cmd += ["--steps", "3", "--no-captions", "--on-unsafe", "block"]  # default log level: uvicorn kept quiet
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        assert httpx.get(url + "/healthz").json()["models"] == ["toy"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="env-key", max_retries=0)
        out = client.images.generate(prompt="a blue square on a black background", extra_body={"seed": 0})
        item = out.data[0]
        assert item.model_extra["decision"] in ("pass", "block")
        assert (item.b64_json is None) == (item.model_extra["decision"] == "block")
        info = httpx.get(url + "/v1/info").json()
        assert info["on_unsafe"] == "block" and info["auth_required"] is True and info["default_size"] == "32x32"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).images.generate(prompt="x")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/" in err
    # uvicorn's banner and access lines are library log lines: hidden unless -v / --log-level info.
    assert "Uvicorn running" not in err and "Started server process" not in err
    assert "GET /healthz" not in err + out and "POST /v1/images/generations" not in err + out


def test_cli_serve_usage_errors():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "safegen.cli.main", "serve"]
    bad = subprocess.run(base + ["--preset", "toy", "--on-unsafe", "hide"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "on_unsafe" in bad.stderr
    none = subprocess.run(base + ["--preset", "toy", "--no-captions", "--max-n", "9", "--queue-size", "4"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert none.returncode == 2 and "queue_size" in none.stderr
    # A key of only spaces would turn login off: refused in one line, before any model loads.
    blank = subprocess.run(base + ["--preset", "toy", "--api-key", "   "], env=env, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert blank.returncode == 2 and "api_keys" in blank.stderr and len(blank.stderr.strip().splitlines()) == 1
    spaces = subprocess.run(base + ["--preset", "toy"], env={**env, "SAFEGEN_API_KEYS": "  "}, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert spaces.returncode == 2 and "SAFEGEN_API_KEYS" in spaces.stderr
