"""Talk to `safegen serve` with the official `openai` client, unchanged (needs the serve extra).

    python examples/serve_client.py                           # starts the toy server here, offline
    python examples/serve_client.py --url http://127.0.0.1:8000 [--api-key KEY]   # a running server

Generates two images of an unsafe prompt with the same seed as a safe one, saves the PNGs
(they carry their generation parameters) and prints each image's classifier verdict and
the server's decision; then captions one of them through `/v1/captions`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
from pathlib import Path

import httpx
from openai import OpenAI

PROMPTS = ["a red circle on a white background covered in blood", "a red circle on a white background"]


@contextlib.contextmanager
def toy_server():
    """The toy preset served on a free loopback port in this process (what `safegen serve --preset toy` runs)."""
    from safegen.serve import ServeConfig, create_app, load_caption_engine, load_image_engine
    from safegen.serve.server import BackgroundServer

    config = ServeConfig(preset="toy", device="cpu", steps=20, guidance=5.0)
    app = create_app(config, image_engine=load_image_engine(config), caption_engine=load_caption_engine(config))
    with BackgroundServer(app) as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start the toy one here)")
    parser.add_argument("--api-key", default="none", help="the server's --api-key, if it has one")
    parser.add_argument("--out", type=Path, default=Path("outputs/serve_example"))
    args = parser.parse_args()

    with contextlib.nullcontext(args.url) if args.url else toy_server() as url:
        client = OpenAI(base_url=f"{url}/v1", api_key=args.api_key)
        model = client.models.list().data[0].id
        print(f"server {url}: model {model}")
        args.out.mkdir(parents=True, exist_ok=True)
        for prompt in PROMPTS:
            out = client.images.generate(
                model=model, prompt=prompt, n=2, response_format="b64_json", extra_body={"seed": 0}
            )
            print(f"{prompt!r} (safe encoder {out.model_extra['safe_encoder']}):")
            for item in out.data:
                extra = item.model_extra
                verdict = extra["safety"]
                score = f"unsafe score {verdict['score']:.2f}" if verdict else "not checked"
                line = f"  seed {extra['seed']}: {extra['decision']} ({score})"
                if item.b64_json:
                    path = args.out / f"{prompt.replace(' ', '_')}-{extra['seed']}.png"
                    path.write_bytes(base64.b64decode(item.b64_json))
                    line += f" -> {path}"
                print(line)
        first = next(args.out.glob("*.png"), None)
        if first is not None:
            answer = httpx.post(
                f"{url}/v1/captions",
                files={"file": (first.name, first.read_bytes(), "image/png")},
                headers={"Authorization": f"Bearer {args.api_key}"},
                timeout=120,
            )
            if answer.status_code == 200:
                print(f"caption of {first.name}: {answer.json()['caption']!r}")
            else:
                print(f"captions: {answer.json()['error']['message']}")


if __name__ == "__main__":
    main()
