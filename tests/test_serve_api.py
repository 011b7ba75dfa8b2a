"""`safegen serve`'s HTTP API on tiny models: answers, batching, policy, limits, 429, timeouts, keys, metrics."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import FlagAll  # noqa: E402
from serve_helpers import FAST, GatedEngine, config, make_engine  # noqa: E402

from safegen.serve import ServeConfig, create_app, keys_from_env  # noqa: E402
from safegen.serve.engines import CaptionEngine, CaptionJob, ImageEngine  # noqa: E402


def pixels(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def png_chunk(b64: str) -> dict:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        return json.loads(im.text["safegen"])


def test_generation_answer_shape_seeds_and_png_parameters(tiny_pipes):
    app = create_app(config(), image_engine=make_engine(tiny_pipes, classifier=FlagAll(unsafe=False)))
    with TestClient(app) as client:
        r = client.post(
            "/v1/images/generations",
            json={"prompt": "a red car", "n": 2, "seed": 5, "response_format": "b64_json", "model": "tiny", **FAST},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["safe_encoder"] == "tiny/safe" and body["model"] == "tiny" and body["size"] == "32x32"
        assert body["prompt_truncated"] is None
        assert [d["seed"] for d in body["data"]] == [5, 6]
        for d in body["data"]:
            assert d["decision"] == "pass"
            assert d["safety"] == {"classifier": "flag-all", "unsafe": False, "score": 0.1, "labels": {"TEST": 0.1}}
            assert pixels(d["b64_json"]).shape == (32, 32, 3)
        chunk = png_chunk(body["data"][1]["b64_json"])
        assert chunk["seed"] == 6 and chunk["prompt"] == "a red car" and chunk["safe_encoder"] == "tiny/safe"
        # Same seed, same image; the second image of n=2 is the first of a request seeded 6.
        again = client.post("/v1/images/generations", json={"prompt": "a red car", "seed": 6, **FAST}).json()
        assert np.array_equal(pixels(again["data"][0]["b64_json"]), pixels(body["data"][1]["b64_json"]))
        assert not np.array_equal(pixels(body["data"][0]["b64_json"]), pixels(body["data"][1]["b64_json"]))
        long = " ".join(f"word{i}" for i in range(120))
        cut = client.post("/v1/images/generations", json={"prompt": long, **FAST}).json()["prompt_truncated"]
        assert cut and cut.endswith("word119") and "word0 " not in cut


def test_prompt_check_never_calls_the_tokenizer_the_pipeline_generates_with(tiny_pipes, monkeypatch):
    # A fast tokenizer resets shared padding state on every call: a length check on the request
    # thread while the worker tokenizes left the negative prompt unpadded (HTTP 500 under load).
    safe, _ = tiny_pipes
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    callers: list[str] = []
    tokenizer_call = type(safe.tokenizer).__call__

    def spy(tok, *args, **kwargs):
        callers.append("pipeline" if tok is safe.tokenizer else "check")
        return tokenizer_call(tok, *args, **kwargs)

    monkeypatch.setattr(type(safe.tokenizer), "__call__", spy)
    engine.gate.clear()
    app = create_app(config(), image_engine=engine)
    long = " ".join(f"word{i}" for i in range(120))
    with TestClient(app) as client:
        answer: dict = {}
        t = threading.Thread(
            target=lambda: answer.update(client.post("/v1/images/generations", json={"prompt": long, **FAST}).json())
        )
        t.start()
        try:
            assert engine.entered.wait(30)
            before_generation = list(callers)  # the request has been checked and queued; nothing generated yet
        finally:
            engine.gate.set()
            t.join(60)
    assert "check" in before_generation and "pipeline" not in before_generation
    assert answer["prompt_truncated"].endswith("word119") and len(answer["data"]) == 1
    assert "pipeline" in callers  # the spy saw the generation too, so the first check meant something


def test_image_equals_plain_diffusers_call(tiny_pipes):
    import torch

    app = create_app(config(), image_engine=make_engine(tiny_pipes))
    with TestClient(app) as client:
        body = client.post("/v1/images/generations", json={"prompt": "a dog", "seed": 11, **FAST}).json()
    plain = tiny_pipes[0](
        "a dog", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(11)
    ).images[0]
    assert np.array_equal(np.asarray(plain, dtype=np.int16), pixels(body["data"][0]["b64_json"]))


def test_concurrent_requests_share_a_call_and_match_single_images(tiny_pipes):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(max_batch=4, max_wait_ms=50, queue_size=16), image_engine=engine)
    prompts = ["a cat", "a dog", "a red car", "a blue sky"]

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            engine.gate.clear()
            first = asyncio.create_task(
                client.post("/v1/images/generations", json={"prompt": "warm up", "seed": 1, **FAST})
            )
            await asyncio.to_thread(engine.entered.wait, 10)  # the worker is busy: the next four queue up
            tasks = [
                client.post("/v1/images/generations", json={"prompt": p, "seed": 20 + i, **FAST})
                for i, p in enumerate(prompts)
            ]
            pending = asyncio.gather(*tasks)
            await asyncio.sleep(0.2)
            engine.gate.set()
            return await first, await pending

    first, answers = asyncio.run(burst())
    assert first.status_code == 200 and all(a.status_code == 200 for a in answers)
    assert engine.calls == [1, 4]  # the four queued requests went through one pipeline call
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
        assert 'safegen_batch_size_bucket{queue="images",le="4"} 2' in metrics
        assert 'safegen_batch_size_bucket{queue="images",le="2"} 1' in metrics
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            alone = client.post("/v1/images/generations", json={"prompt": p, "seed": 20 + i, **FAST}).json()
            x, y = pixels(alone["data"][0]["b64_json"]), pixels(a.json()["data"][0]["b64_json"])
            # Same noise and embeddings; only float rounding of batched kernels may differ.
            assert np.abs(x - y).max() <= 1 and (x != y).mean() < 0.01


def test_incompatible_settings_do_not_share_a_call(tiny_pipes):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(max_batch=8, max_wait_ms=50), image_engine=engine)

    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            engine.gate.clear()
            first = asyncio.create_task(client.post("/v1/images/generations", json={"prompt": "x", **FAST}))
            await asyncio.to_thread(engine.entered.wait, 10)
            tasks = [
                client.post("/v1/images/generations", json={"prompt": "a", "steps": 2, "size": "32x32"}),
                client.post("/v1/images/generations", json={"prompt": "b", "steps": 3, "size": "32x32"}),
                client.post("/v1/images/generations", json={"prompt": "c", "steps": 2, "size": "32x32"}),
                client.post("/v1/images/generations", json={"prompt": "d", "steps": 2, "size": "64x32"}),
            ]
            pending = asyncio.gather(*tasks)
            await asyncio.sleep(0.2)
            engine.gate.set()
            return [await first, *await pending]

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 5
    assert engine.calls == [1, 2, 1, 1]  # a+c together (oldest first), then b, then d
    assert [a.json()["steps"] for a in answers[1:]] == [2, 3, 2, 2]


@pytest.mark.parametrize("on_unsafe", ["blur", "block", "keep"])
def test_output_policy_matches_batch(tiny_pipes, on_unsafe):
    clean = create_app(config(), image_engine=make_engine(tiny_pipes))
    flagged = create_app(config(on_unsafe=on_unsafe), image_engine=make_engine(tiny_pipes, policy=ServeConfig(
        check=None, on_unsafe=on_unsafe).policy, classifier=FlagAll()))  # fmt: skip
    req = {"prompt": "a cat", "seed": 3, **FAST}
    with TestClient(clean) as a, TestClient(flagged) as b:
        original = pixels(a.post("/v1/images/generations", json=req).json()["data"][0]["b64_json"])
        body = b.post("/v1/images/generations", json=req).json()
    item = body["data"][0]
    assert item["decision"] == on_unsafe and item["safety"]["unsafe"] is True and item["safety"]["score"] == 0.9
    if on_unsafe == "block":
        assert item["b64_json"] is None
    elif on_unsafe == "keep":
        assert np.array_equal(pixels(item["b64_json"]), original)
    else:
        from safegen.jobs.policy import blur

        expected = np.asarray(blur(Image.fromarray(original.astype(np.uint8))), dtype=np.int16)
        assert np.array_equal(pixels(item["b64_json"]), expected)
        assert not np.array_equal(pixels(item["b64_json"]), original)


def test_compare_only_when_allowed(tiny_pipes):
    req = {"prompt": "a cat", "seed": 3, "compare": True, **FAST}
    closed = create_app(config(), image_engine=make_engine(tiny_pipes))
    with TestClient(closed) as client:
        r = client.post("/v1/images/generations", json=req)
        assert r.status_code == 403 and r.json()["error"]["param"] == "compare"
        assert client.get("/v1/info").json()["allow_compare"] is False
    engine = make_engine(tiny_pipes, compare=True, classifier=FlagAll())
    open_ = create_app(config(allow_compare=True), image_engine=engine)
    with TestClient(open_) as client:
        assert client.get("/v1/info").json()["allow_compare"] is True
        item = client.post("/v1/images/generations", json=req).json()["data"][0]
    # The safe image follows the policy; the original is shown as is, with its own verdict.
    assert item["decision"] == "blur" and item["original"]["decision"] == "keep"
    assert item["original"]["seed"] == item["seed"] == 3
    assert png_chunk(item["original"]["b64_json"])["safe_encoder"] is None
    assert png_chunk(item["b64_json"])["safe_encoder"] == "tiny/safe"
    import torch

    plain = tiny_pipes[1](
        "a cat", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(3)
    )
    assert np.array_equal(np.asarray(plain.images[0], dtype=np.int16), pixels(item["original"]["b64_json"]))


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"prompt": "x" * 101}, 400, "prompt"),
        ({"prompt": "   "}, 400, "prompt"),
        ({"n": 3}, 400, "n"),
        ({"n": 0}, 400, "n"),
        ({"n": "many"}, 400, "n"),
        ({"size": "72x72"}, 400, "size"),
        ({"size": "30x32"}, 400, "size"),
        ({"size": "big"}, 400, "size"),
        ({"steps": 6}, 400, "steps"),
        ({"guidance": -1}, 400, "guidance"),
        ({"seed": 2**63}, 400, "seed"),
        ({"response_format": "url"}, 400, "response_format"),
        ({"model": "/etc/passwd"}, 404, "model"),
        ({"model": "sd-1.4"}, 404, "model"),
    ],
)
def test_limits_answer_openai_errors(tiny_pipes, change, status, param):
    app = create_app(config(max_prompt_chars=100, max_n=2, max_steps=5), image_engine=make_engine(tiny_pipes))
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"prompt": "a cat", **FAST, **change})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_oversized_bodies_are_refused_before_reading(tiny_pipes):
    app = create_app(config(max_upload_mb=0.01), image_engine=make_engine(tiny_pipes))
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", content=b"{" + b" " * (1024 * 1024 + 10) + b"}")
        assert r.status_code == 413
        r = client.post("/v1/captions", files={"file": ("a.png", b"0" * 200_000, "image/png")})
        assert r.status_code == 413 and "exceeds" in r.json()["error"]["message"]


def test_full_queue_answers_429_with_retry_after_and_loses_nothing(tiny_pipes):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(max_batch=2, queue_size=4, max_n=4), image_engine=engine)

    async def flood():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            engine.gate.clear()
            running = asyncio.create_task(client.post("/v1/images/generations", json={"prompt": "r", **FAST}))
            await asyncio.to_thread(engine.entered.wait, 10)
            waiting = [
                asyncio.create_task(client.post("/v1/images/generations", json={"prompt": f"w{i}", "seed": i, **FAST}))
                for i in range(4)
            ]
            await asyncio.sleep(0.2)  # the four fill the queue
            refused = [
                await client.post("/v1/images/generations", json={"prompt": "late", **FAST}),
                await client.post("/v1/images/generations", json={"prompt": "late", "n": 2, **FAST}),
            ]
            health = (await client.get("/healthz")).json()
            engine.gate.set()
            return await running, [await w for w in waiting], refused, health

    running, waiting, refused, health = asyncio.run(flood())
    assert health["queue"]["images"] == 4
    for r in refused:
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
    assert running.status_code == 200
    assert [w.status_code for w in waiting] == [200] * 4  # every accepted request is answered
    assert [w.json()["data"][0]["seed"] for w in waiting] == [0, 1, 2, 3]
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
    assert 'safegen_requests_total{endpoint="/v1/images/generations",code="429"} 2' in metrics
    assert 'safegen_queue_depth{queue="images"} 0' in metrics


def test_timeout_answers_504_and_skips_the_abandoned_work(tiny_pipes):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(timeout_s=0.3, queue_size=8), image_engine=engine)

    async def slow():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            engine.gate.clear()
            running = asyncio.create_task(client.post("/v1/images/generations", json={"prompt": "r", **FAST}))
            await asyncio.to_thread(engine.entered.wait, 10)
            waiting = await client.post("/v1/images/generations", json={"prompt": "w", **FAST})
            engine.gate.set()
            return await running, waiting

    running, waiting = asyncio.run(slow())
    assert running.status_code == 504 and waiting.status_code == 504
    assert waiting.json()["error"]["code"] == "timeout"
    app.state.service.image_batcher.stop()
    # The running call finished (its answer dropped); the waiting request never reached the model.
    assert engine.calls == [1]


def test_api_keys(tiny_pipes, monkeypatch):
    app = create_app(config(api_keys=["k-one", "k-two"]), image_engine=make_engine(tiny_pipes))
    req = {"prompt": "a cat", **FAST}
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json=req)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert (
            client.post("/v1/images/generations", json=req, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        assert client.get("/v1/models", headers={"Authorization": "Basic k-one"}).status_code == 401
        ok = client.post("/v1/images/generations", json=req, headers={"Authorization": "Bearer k-two"})
        assert ok.status_code == 200
        # The page, health, metrics and the page's settings stay open.
        for path in ("/", "/healthz", "/metrics", "/v1/info", "/static/app.js"):
            assert client.get(path).status_code == 200, path
        assert client.get("/v1/info").json()["auth_required"] is True
    monkeypatch.setenv("SAFEGEN_API_KEYS", " a1 , ,b2 ")
    assert keys_from_env() == ["a1", "b2"]
    assert "k-one" not in json.dumps(ServeConfig(api_keys=["k-one"]).public_dict())


def test_models_health_metrics_and_page(tiny_pipes):
    app = create_app(config(), image_engine=make_engine(tiny_pipes))
    with TestClient(app) as client:
        models = client.get("/v1/models").json()
        assert models["object"] == "list"
        assert [(m["id"], m["task"], m["safe_encoder"]) for m in models["data"]] == [
            ("tiny", "text-to-image", "tiny/safe")
        ]
        assert client.get("/healthz").json() == {
            "status": "ok",
            "models": ["tiny"],
            "queue": {"images": 0, "captions": None},
        }
        client.post("/v1/images/generations", json={"prompt": "a cat", **FAST})
        text = client.get("/metrics")
        assert text.headers["content-type"].startswith("text/plain")
        body = text.text
        assert 'safegen_requests_total{endpoint="/v1/images/generations",code="200"} 1' in body
        assert 'safegen_request_seconds_count{endpoint="/v1/images/generations"} 1' in body
        assert 'safegen_images_total{decision="pass"} 1' in body
        assert "# TYPE safegen_queue_depth gauge" in body
        page = client.get("/")
        assert page.status_code == 200 and 'id="gen-form"' in page.text
        info = client.get("/v1/info").json()
        assert info["default_size"] == "64x64" and info["max_size"] == 64 and info["auth_required"] is False
        r = client.post("/v1/captions", files={"file": ("a.png", b"x", "image/png")})
        assert r.status_code == 404
        # unknown paths and wrong methods answer in OpenAI's error shape too
        missing, wrong = client.get("/v1/nothing-here"), client.get("/v1/images/generations")
        assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
        assert wrong.status_code == 405 and "message" in wrong.json()["error"] and "allow" in wrong.headers


def test_every_serve_flag_is_a_config_field_with_the_configs_default():
    """`safegen serve` hands its flags to ServeConfig by name (cli/serve.py: config_fields): each flag maps
    onto a field, or is named as not one, and the flags' defaults are the config's."""
    import inspect

    from safegen.cli import serve as serve_cli

    params = inspect.signature(serve_cli.serve).parameters
    defaults = {name: p.default for name, p in params.items() if name != "ctx"}
    assert set(serve_cli.NOT_FIELDS) <= set(defaults) and set(serve_cli.FIELD_OF_FLAG) <= set(defaults)
    assert ServeConfig(**serve_cli.config_fields(defaults)) == ServeConfig()


def test_config_validation_names_the_field():
    from safegen.core.errors import UsageError

    with pytest.raises(UsageError, match="on_unsafe"):
        ServeConfig(on_unsafe="hide")
    with pytest.raises(UsageError, match="queue_size"):
        ServeConfig(queue_size=2, max_n=4)
    with pytest.raises(UsageError, match="max_size"):
        ServeConfig(max_size=100)
    with pytest.raises(UsageError, match="header_timeout_s"):
        ServeConfig(header_timeout_s=0)
    with pytest.raises(UsageError, match="max_connections"):
        ServeConfig(max_connections=0)
    # Refused before any model loads, as the generating commands refuse them (before, at model load, or never).
    for bad, message in [
        (dict(guidance=float("nan")), "guidance must be a finite number >= 0, got nan"),
        (dict(threshold=5.0), r"threshold must be a number in \[0, 1\], got 5.0"),
        (dict(threshold=float("nan")), "threshold must be a number"),
        (dict(device="gpu0"), "serve config: device 'gpu0' is not a device"),
        (dict(attention="flash"), "serve config: attention 'flash' is unknown"),
        (dict(timeout_s=float("nan")), "timeout_s must be > 0, got nan"),
        (dict(body_timeout_s=float("nan")), "body_timeout_s must be > 0, got nan"),
        (dict(max_wait_ms=float("nan")), "max_wait_ms must be >= 0, got nan"),
        (dict(max_upload_mb=float("nan")), "max_upload_mb must be > 0, got nan"),
    ]:
        with pytest.raises(UsageError, match=message):
            ServeConfig(**bad)
    # --port refuses 0 and 70000 (click's range); the config too, for Python users.
    for port in (0, 70000):
        with pytest.raises(UsageError, match=rf"port must be in \[1, 65535\], got {port}"):
            ServeConfig(port=port)
    assert ServeConfig(check="none").check is None
    assert ServeConfig(on_unsafe="block").policy == "drop"
    assert ServeConfig().host == "127.0.0.1"


# ------------------------------------------------------------------------------------------- captions


@pytest.fixture(scope="module")
def caption_engine():
    from safegen import SafeLlavaCaptioner
    from safegen.testing import tiny_llava

    model, processor = tiny_llava(seed=0)
    return CaptionEngine(SafeLlavaCaptioner.from_model(model, processor), model_id="tiny-cap")


def _png(color, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_captions_match_the_captioner_and_check_uploads(caption_engine):
    app = create_app(
        config(max_new_tokens=8, max_upload_mb=1, max_upload_pixels=64 * 64), caption_engine=caption_engine
    )
    with TestClient(app) as client:
        r = client.post(
            "/v1/captions", files={"file": ("red.png", _png("red"), "image/png")}, data={"model": "tiny-cap"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        expected = caption_engine.captioner.caption(
            Image.new("RGB", (32, 32), "red"), temperature=0, max_new_tokens=8
        )[0]
        assert body["caption"] == expected and body["model"] == "tiny-cap" and body["max_new_tokens"] == 8
        bad = {
            "not an image": (client.post("/v1/captions", files={"file": ("x.png", b"hello", "image/png")}), 400),
            "empty": (client.post("/v1/captions", files={"file": ("x.png", b"", "image/png")}), 400),
            "too many pixels": (
                client.post("/v1/captions", files={"file": ("big.png", _png("red", (128, 128)), "image/png")}),
                413,
            ),
            "tokens": (
                client.post("/v1/captions", files={"file": ("r.png", _png("red"))}, data={"max_new_tokens": 9}),
                400,
            ),
            "model": (
                client.post("/v1/captions", files={"file": ("r.png", _png("red"))}, data={"model": "other"}),
                404,
            ),
            "no file": (client.post("/v1/captions", data={"prompt": "hi"}), 400),
        }
        for what, (resp, status) in bad.items():
            assert resp.status_code == status, (what, resp.text)
            assert resp.json()["error"]["message"], what
        r = client.post("/v1/images/generations", json={"prompt": "a cat"})
        assert r.status_code == 404


def test_concurrent_greedy_captions_share_a_call(caption_engine):
    calls: list[int] = []
    gate = threading.Event()
    inner = caption_engine.caption

    def counted(jobs):
        calls.append(len(jobs))
        gate.wait(30)
        return inner(jobs)

    caption_engine.caption = counted
    try:
        app = create_app(config(max_new_tokens=6, max_wait_ms=50), caption_engine=caption_engine)
        colours = ["red", "blue", "green"]

        async def burst():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

                def post(colour, **data):
                    return client.post("/v1/captions", files={"file": ("i.png", _png(colour))}, data=data)

                first = asyncio.create_task(post("white"))
                while not calls:
                    await asyncio.sleep(0.01)
                pending = asyncio.gather(*(post(c) for c in colours), post("red", temperature="0.7", seed="1"))
                await asyncio.sleep(0.3)
                gate.set()
                return await first, await pending

        first, answers = asyncio.run(burst())
    finally:
        caption_engine.caption = inner
    assert first.status_code == 200 and all(a.status_code == 200 for a in answers)
    assert calls == [1, 3, 1]  # three greedy captions in one call; the sampled one alone
    for colour, answer in zip(colours, answers, strict=False):
        alone = inner([CaptionJob(Image.new("RGB", (32, 32), colour), "Describe this image.", 0.0, 6, 0)])[0]
        assert answer.json()["caption"] == alone


def test_a_failing_call_answers_500_and_the_server_goes_on(tiny_pipes):
    class Flaky(ImageEngine):
        fail = True

        def render(self, jobs):
            if self.fail:
                self.fail = False
                raise RuntimeError("out of memory (simulated)")
            return super().render(jobs)

    app = create_app(config(), image_engine=make_engine(tiny_pipes, cls=Flaky))
    with TestClient(app) as client:
        r = client.post("/v1/images/generations", json={"prompt": "a cat", **FAST})
        assert r.status_code == 500 and "out of memory (simulated)" in r.json()["error"]["message"]
        assert client.post("/v1/images/generations", json={"prompt": "a cat", **FAST}).status_code == 200


def test_retry_after_counts_the_call_in_progress():
    from safegen.serve.batching import DynamicBatcher

    release = threading.Event()
    batcher = DynamicBatcher(lambda xs: release.wait(30) and xs, max_batch=1, max_wait_s=0, queue_size=1)

    async def scenario():
        items = batcher.submit([("k", 1)])
        await asyncio.sleep(1.3)  # the first call is still running: no finished call to average yet
        estimate = batcher.retry_after()
        release.set()
        return estimate, await items[0].future

    estimate, result = asyncio.run(scenario())
    batcher.stop()
    assert estimate >= 2 and result == 1


# ------------------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("param", ["prompt", "negative_prompt", "model", "size"])
def test_a_lone_surrogate_answers_400_in_openai_shape_and_is_counted(tiny_pipes, param):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(), image_engine=engine)
    body = {"prompt": "a cat", **FAST, param: "a \ud800 cat"}
    with TestClient(app) as client:
        # json.dumps escapes the surrogate as \ud800, exactly what a hostile client sends.
        r = client.post(
            "/v1/images/generations", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and "surrogate" in error["message"] and error["type"]
        control = client.post("/v1/images/generations", json={"prompt": "a\x00cat", **FAST})
        assert control.status_code == 400 and "U+0000" in control.json()["error"]["message"]
        metrics = client.get("/metrics").text
    assert 'safegen_requests_total{endpoint="/v1/images/generations",code="400"} 2' in metrics
    assert engine.calls == []  # refused before queuing


def test_an_item_that_fails_its_batch_fails_alone(tiny_pipes):
    class Poisoned(GatedEngine):
        def render(self, jobs):
            if any(j.prompt == "poison" for j in jobs):
                self.calls.append(len(jobs))
                raise RuntimeError("the model choked on one prompt (simulated)")
            return super().render(jobs)

    engine = make_engine(tiny_pipes, cls=Poisoned)
    app = create_app(config(max_batch=4, max_wait_ms=50), image_engine=engine)

    async def burst():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            engine.gate.clear()
            first = asyncio.create_task(client.post("/v1/images/generations", json={"prompt": "warm", **FAST}))
            await asyncio.to_thread(engine.entered.wait, 10)
            pending = asyncio.gather(
                *(
                    client.post("/v1/images/generations", json={"prompt": p, "seed": 9, **FAST})
                    for p in ("poison", "a dog")
                )
            )
            await asyncio.sleep(0.2)
            engine.gate.set()
            return await first, *await pending

    first, poison, dog = asyncio.run(burst())
    assert first.status_code == 200 and dog.status_code == 200, dog.text
    assert poison.status_code == 500 and "choked" in poison.json()["error"]["message"]
    assert engine.calls == [1, 2, 1, 1]  # warm-up, the shared call that failed, then each item alone
    with TestClient(app) as client:
        alone = client.post("/v1/images/generations", json={"prompt": "a dog", "seed": 9, **FAST}).json()
    assert np.array_equal(pixels(alone["data"][0]["b64_json"]), pixels(dog.json()["data"][0]["b64_json"]))


def test_a_failing_finish_is_retried_item_by_item():
    from safegen.serve.batching import DynamicBatcher

    def finish(payloads, raw):
        if "bad" in payloads:
            raise ValueError("cannot encode")
        return [r.upper() for r in raw]

    batcher = DynamicBatcher(list, max_batch=4, max_wait_s=0.2, queue_size=4, finish=finish)

    async def scenario():
        items = batcher.submit([("k", p) for p in ("a", "bad", "c")])
        return await asyncio.gather(*(it.future for it in items), return_exceptions=True)

    results = asyncio.run(scenario())
    batcher.stop()
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)


def test_every_answer_carries_the_security_headers(tiny_pipes):
    app = create_app(config(api_keys=["k"], max_upload_mb=0.01), image_engine=make_engine(tiny_pipes))
    with TestClient(app) as client:
        answers = [
            client.get("/"),
            client.get("/static/app.js"),
            client.get("/healthz"),
            client.get("/metrics"),
            client.get("/v1/models"),  # 401
            client.get("/v1/models", headers={"Authorization": "Bearer k"}),
            client.get("/nothing-here"),  # 404
            client.post("/v1/captions", content=b"x" * 200_000, headers={"Authorization": "Bearer k"}),  # 413
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 401, 200, 404, 413]
    for a in answers:
        assert a.headers["x-content-type-options"] == "nosniff", a.url
        assert a.headers["x-frame-options"] == "DENY"
        csp = a.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp


def test_the_schema_needs_the_key_when_keys_are_set(tiny_pipes):
    with TestClient(create_app(config(api_keys=["k"]), image_engine=make_engine(tiny_pipes))) as client:
        assert client.get("/openapi.json").status_code == 401
        schema = client.get("/openapi.json", headers={"Authorization": "Bearer k"})
        assert schema.status_code == 200 and "/v1/images/generations" in schema.json()["paths"]
        assert client.get("/docs").status_code in (401, 404) and client.get("/redoc").status_code in (401, 404)
    with TestClient(create_app(config(), image_engine=make_engine(tiny_pipes))) as client:
        assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("keys", [["   "], ["k-one", ""], ["\t"]])
def test_a_blank_key_is_refused_instead_of_turning_login_off(keys):
    from safegen.core.errors import UsageError

    with pytest.raises(UsageError, match="api_keys.*empty key"):
        ServeConfig(api_keys=keys)


def test_a_blank_key_variable_is_refused():
    from safegen.core.errors import UsageError

    for raw in ("   ", " , "):
        with pytest.raises(UsageError, match="SAFEGEN_API_KEYS"):
            keys_from_env({"SAFEGEN_API_KEYS": raw})
    assert keys_from_env({"SAFEGEN_API_KEYS": ""}) == [] and keys_from_env({}) == []


def test_the_page_form_posts_and_never_carries_the_key(tiny_pipes):
    import re

    engine = make_engine(tiny_pipes, cls=GatedEngine)
    with TestClient(create_app(config(api_keys=["k"]), image_engine=engine)) as client:
        page = client.get("/").text
        form = re.search(r"<form[^>]*>", page).group()
        assert 'method="post"' in form and 'action="/"' in form
        key_input = re.search(r'<input[^>]*id="api-key"[^>]*>', page).group()
        assert "name=" not in key_input  # a form submission cannot carry the key
        # Without the script, the submit lands here: refused, nothing generated.
        r = client.post("/", data={"prompt": "a cat", "seed": "1"})
        assert r.status_code == 400 and "JavaScript" in r.text
    assert engine.calls == []


def test_uploads_open_with_the_project_loader(caption_engine):
    seen = []
    inner = caption_engine.caption

    def spy(jobs):
        seen.extend(j.image for j in jobs)
        return inner(jobs)

    caption_engine.caption = spy
    try:
        app = create_app(config(max_new_tokens=4), caption_engine=caption_engine)
        buf = io.BytesIO()
        Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(buf, format="PNG")  # fully transparent
        with TestClient(app) as client:
            ok = client.post("/v1/captions", files={"file": ("t.png", buf.getvalue(), "image/png")})
            bad = client.post("/v1/captions", files={"file": ("x.png", b"not an image", "image/png")})
    finally:
        caption_engine.caption = inner
    assert ok.status_code == 200, ok.text
    # safegen.data.image_io.load_image flattens transparency onto white (a bare convert("RGB") gives black).
    assert seen[0].mode == "RGB" and seen[0].getpixel((0, 0)) == (255, 255, 255)
    message = bad.json()["error"]["message"]
    assert bad.status_code == 400 and "not an image" in message
    assert "safegen-upload" not in message and "/tmp" not in message  # the server's paths stay private
