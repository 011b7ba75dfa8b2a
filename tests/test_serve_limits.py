"""`safegen serve`'s limits against hostile clients, over raw sockets to a real server on 127.0.0.1.

Each test speaks HTTP/1.1 by hand (what an attacker does), so framing, timing and partial
requests are exactly as written here. Deadlines are set to fractions of a second; every
socket has a timeout and every loop a bound, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

# The tiny pipelines are conftest's `tiny_pipes` fixture, as in test_serve_api.
from serve_helpers import FAST, GatedEngine, config, make_engine  # noqa: E402

from safegen.serve import create_app  # noqa: E402
from safegen.serve.server import BackgroundServer  # noqa: E402

SOCKET_TIMEOUT = 15.0  # far above the deadlines configured below: only a regression waits this long


def connect(server: BackgroundServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=SOCKET_TIMEOUT)
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes the connection (bounded in bytes)."""
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def request(path: str, body: bytes, *, extra: str = "", length: bool = True, kind: str = "application/json") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\nConnection: close\r\n"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


PART = b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in range(0, len(data), size)]


def send_chunks(sock: socket.socket, chunks: list[bytes]) -> None:
    """Send until done or until the server closes on us (it may refuse mid-body)."""
    try:
        for c in chunks:
            sock.sendall(c)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_chunked_body_with_a_lying_content_length_is_refused_unread(tiny_pipes):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    with BackgroundServer(create_app(config(), image_engine=engine)) as srv:
        # A valid request padded to 2 MB; Content-Length says 10, the chunks say the rest.
        payload = json.dumps({"prompt": "a cat", **FAST}).encode() + b" " * (2 * 1024 * 1024)
        sock = connect(srv)
        lying = "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"
        sock.sendall(request("/v1/images/generations", b"", extra=lying, length=False))
        send_chunks(sock, [*chunked(payload), b"0\r\n\r\n"])
        status, headers, body = parse(read_until_closed(sock))
        sock.close()
    assert status == 400 and "both Content-Length and Transfer-Encoding" in json.loads(body)["error"]["message"]
    assert headers["connection"] == "close"
    assert engine.calls == []  # nothing generated


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/captions"])
def test_chunked_body_past_the_limit_gets_413_while_still_sending(tiny_pipes, path):
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(max_upload_mb=0.05), image_engine=engine)
    with BackgroundServer(app) as srv:
        sock = connect(srv)
        kind, start = "application/json", b'{"prompt": "'
        if path == "/v1/captions":  # an upload: one file part that never ends
            kind, start = "multipart/form-data; boundary=b0", PART
        sock.sendall(request(path, b"", extra="Transfer-Encoding: chunked\r\n", length=False, kind=kind))
        # 2 MB of a body that is never finished: the answer can only come from counting while reading.
        send_chunks(sock, chunked(start + b"x" * (2 * 1024 * 1024)))
        status, headers, body = parse(read_until_closed(sock))
        sock.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
    assert engine.calls == []


@pytest.mark.parametrize(
    ("sent", "what"),
    [
        (b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty", "headers"),
        (
            request("/v1/images/generations", b"", extra="Content-Length: 100\r\n", length=False) + b'{"prompt": ',
            "body",
        ),
    ],
)
def test_stalled_clients_get_408_and_are_closed(tiny_pipes, sent, what):
    app = create_app(config(header_timeout_s=0.3, body_timeout_s=0.3), image_engine=make_engine(tiny_pipes))
    with BackgroundServer(app) as srv:
        stalled = [connect(srv) for _ in range(10)]
        for sock in stalled:
            sock.sendall(sent)  # ...and then nothing more
        answers = [read_until_closed(sock) for sock in stalled]  # returns once the server closes
        for sock in stalled:
            sock.close()
    for raw in answers:
        status, headers, body = parse(raw)
        assert status == 408 and headers["connection"] == "close"
        assert what in json.loads(body)["error"]["message"]


def test_connections_beyond_the_cap_get_503_until_stalled_ones_expire(tiny_pipes):
    app = create_app(config(max_connections=3, header_timeout_s=0.5), image_engine=make_engine(tiny_pipes))
    with BackgroundServer(app) as srv:
        stalled = [connect(srv) for _ in range(3)]
        for sock in stalled:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        extra = connect(srv)
        status, _, body = parse(read_until_closed(extra))  # refused before it sent a byte
        extra.close()
        assert status == 503 and json.loads(body)["error"]["code"] == "busy"
        for sock in stalled:  # the header deadline frees their slots
            assert parse(read_until_closed(sock))[0] == 408
            sock.close()
        fresh = connect(srv)
        fresh.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status, headers, body = parse(read_until_closed(fresh))
        fresh.close()
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_a_lone_surrogate_is_refused_and_its_batch_neighbour_still_answers(tiny_pipes):
    # A long prompt puts the surrogate past the head the length check tokenizes, so only full
    # validation catches it before it is batched with the other request.
    engine = make_engine(tiny_pipes, cls=GatedEngine)
    app = create_app(config(max_prompt_chars=20_000, max_wait_ms=200, max_batch=4), image_engine=engine)
    bad_prompt = "a red circle " * 500 + "\\ud800"  # JSON's escape of a lone surrogate
    bad = ('{"prompt": "' + bad_prompt + '", "steps": 2, "size": "32x32"}').encode()
    good = json.dumps({"prompt": "a blue square", "seed": 3, **FAST}).encode()
    warm = json.dumps({"prompt": "warm up", **FAST}).encode()
    with BackgroundServer(app) as srv:
        answers: dict[str, bytes] = {}

        def send(name: str, body: bytes) -> None:
            sock = connect(srv)
            sock.sendall(request("/v1/images/generations", body))
            answers[name] = read_until_closed(sock)
            sock.close()

        engine.gate.clear()
        threads = [threading.Thread(target=send, args=("warm", warm))]
        threads[0].start()
        assert engine.entered.wait(SOCKET_TIMEOUT)  # the worker is busy: the next two would queue together
        threads += [threading.Thread(target=send, args=(n, b)) for n, b in (("bad", bad), ("good", good))]
        for t in threads[1:]:
            t.start()
        threads[1].join(SOCKET_TIMEOUT)  # the refusal needs no model
        engine.gate.set()
        for t in threads:
            t.join(SOCKET_TIMEOUT)
        sock = connect(srv)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        metrics = parse(read_until_closed(sock))[2].decode()
        sock.close()
    status, _, body = parse(answers["bad"])
    error = json.loads(body)["error"]
    assert status == 400 and error["param"] == "prompt" and "surrogate" in error["message"]
    status, _, body = parse(answers["good"])
    assert status == 200 and json.loads(body)["data"][0]["seed"] == 3
    assert parse(answers["warm"])[0] == 200
    assert 'safegen_requests_total{endpoint="/v1/images/generations",code="400"} 1' in metrics
