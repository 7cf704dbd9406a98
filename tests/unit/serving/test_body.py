"""Request bodies at the edge, without Serve: the content types read, the byte count as chunks arrive (how many
chunks are pulled at all), and the proxy's bounded read-ahead."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.datastructures import Headers

from unison.config import load_settings
from unison.serving import deploy
from unison.serving.body import BodyGuard, ReadAhead, content_type_error, proxy_middlewares, read_ahead_bytes

ROOT = Path(__file__).resolve().parents[3]
LIMIT = 4096
CHUNK = 1024


class Payload(BaseModel):
    text: str


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyGuard, limit=lambda: LIMIT)

    @app.post("/echo")
    async def echo(payload: Payload) -> dict[str, int]:
        return {"chars": len(payload.text)}

    return app


class Client:
    """One ASGI request: the body arrives in `chunks` (pulled one per `receive`), answers are collected."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.pulled == len(self.chunks):
            await asyncio.get_running_loop().create_future()  # a client that sends nothing more
        self.pulled += 1
        return {"type": "http.request", "body": self.chunks[self.pulled - 1],
                "more_body": self.pulled < len(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]  # exactly one answer
        return int(start["status"])

    @property
    def body(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


def _request(app: Any, chunks: list[bytes], headers: dict[str, str], method: str = "POST") -> Client:
    client = Client(chunks)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"", "server": ("x", 80),
             "client": ("y", 1), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(asyncio.wait_for(app(scope, client.receive, client.send), 10))
    return client


def _json_chunks(chars: int) -> list[bytes]:
    body = json.dumps({"text": "x" * chars}).encode()
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]


@pytest.mark.parametrize(("content_type", "accepted"), [
    ("application/json", True),
    ("application/json; charset=utf-8", True),
    ("Application/JSON ;charset=UTF-8", True),
    ("application/vnd.api+json", True),
    ("text/plain", False),
    ("text/plain;charset=UTF-8", False),
    ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False),
    ("application/jsonx", False),
    ("text/json+json", False),
    (None, False),
    ("", False),
])
def test_only_json_bodies_are_read(content_type: str | None, accepted: bool) -> None:
    headers = Headers({} if content_type is None else {"content-type": content_type})
    error = content_type_error("POST", headers)
    assert (error is None) == accepted
    if error is not None:
        assert error.endswith("send Content-Type: application/json")
    assert content_type_error("GET", headers) is None  # no body to read
    assert (content_type_error("put", headers) is None) == accepted


def test_the_oip_binary_extension_is_recognised_and_refused_for_now() -> None:
    headers = Headers({"content-type": "application/octet-stream", "inference-header-content-length": "120"})
    assert "binary tensor extension is not supported" in str(content_type_error("POST", headers))
    plain = content_type_error("POST", Headers({"content-type": "application/octet-stream"}))
    assert "'application/octet-stream' is not accepted" in str(plain)


def test_a_body_within_the_limit_is_read_whole() -> None:
    client = _request(_app(), _json_chunks(LIMIT - 100), {"content-type": "application/json"})
    assert client.status == 200 and client.body == {"chars": LIMIT - 100}


def test_a_chunked_body_over_the_limit_is_refused_as_soon_as_the_count_passes_it() -> None:
    chunks = _json_chunks(64 * LIMIT)
    client = _request(_app(), chunks, {"content-type": "application/json"})  # no Content-Length
    assert client.status == 413
    assert client.body == {"error": f"request body exceeds the limit of {LIMIT} bytes"}
    assert client.pulled == LIMIT // CHUNK + 1 < len(chunks)  # read no further than the chunk that crossed


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    client = _request(_app(), _json_chunks(64 * LIMIT), {"content-type": "application/json",
                                                         "content-length": str(64 * LIMIT + 11)})
    assert client.status == 413 and client.pulled == 0
    assert client.body == {"error": f"request body of {64 * LIMIT + 11} bytes exceeds the limit of {LIMIT} bytes"}


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"},
                                     {"content-type": "application/x-www-form-urlencoded"}, {}])
def test_a_body_that_is_not_json_is_refused_before_reading(headers: dict[str, str]) -> None:
    client = _request(_app(), _json_chunks(10), headers)
    assert client.status == 415 and client.pulled == 0
    assert client.body["error"].endswith("send Content-Type: application/json")


def test_the_proxy_reads_no_further_than_its_read_ahead() -> None:
    chunks = [b"x" * CHUNK] * 64

    async def reads_everything(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["more_body"]:
            pass

    client = Client(chunks)
    guarded = ReadAhead(reads_everything, limit=LIMIT)
    scope = {"type": "http", "method": "POST", "headers": []}
    with pytest.raises(TimeoutError):  # held: the request ends when the ingress answers, not here
        asyncio.run(asyncio.wait_for(guarded(scope, client.receive, client.send), 0.5))
    assert client.pulled == LIMIT // CHUNK + 1


def test_the_read_ahead_comes_from_the_proxys_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISON_PROXY_READ_AHEAD_BYTES", "12345")
    (middleware,) = proxy_middlewares()
    assert middleware.cls is ReadAhead and middleware.kwargs == {"limit": 12345}
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    env = config["controller_options"]["runtime_env"]["env_vars"]
    assert read_ahead_bytes(env) == config["applications"][0]["args"]["max_body_bytes"]
    assert read_ahead_bytes({}) is None


def test_serve_up_refuses_a_body_limit_past_the_proxys_read_ahead(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    config["applications"][0]["args"]["max_body_bytes"] = 8 << 20
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(state_dir=tmp_path / "state", serving={"config_file": path})
    with pytest.raises(deploy.ServeError, match="max_body_bytes 8388608 is more than the proxy reads ahead"):
        deploy.render(settings, None, 8000)
    del config["controller_options"]  # no read-ahead in the proxy: nothing to hold the limit to
    path.write_text(yaml.safe_dump(config))
    assert deploy.render(settings, None, 8000)["applications"][0]["args"]["max_body_bytes"] == 8 << 20
