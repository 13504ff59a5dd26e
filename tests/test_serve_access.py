"""Access to `medverse-lab serve` over real HTTP: the API key, the Host check (DNS
rebinding) and the API docs, which are off unless asked."""

from __future__ import annotations

import httpx
import pytest

from serve_util import MODEL, serving

pytestmark = pytest.mark.slow
KEY = "sk-test-4b1d"
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "q"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def locked():
    with serving("--api-key", KEY, "--docs", "--allowed-hosts", "medverse.internal") as s:
        yield s


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {KEY}", KEY, f"Bearer {KEY}x"])
def test_without_the_key_it_is_a_401(locked, auth):
    headers = {"Authorization": auth} if auth else {}
    for method, path in [("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/generate")]:
        r = httpx.request(method, locked.url + path, json=ASK, headers=headers, timeout=30)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"


def test_with_the_key_the_openai_client_is_served(locked):
    from openai import AuthenticationError, OpenAI

    ok = OpenAI(base_url=f"{locked.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    assert ok.chat.completions.create(**ASK).choices[0].message.content.startswith("<Think>")
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{locked.url}/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(f"{locked.url}/health").json()["status"] == "ok"  # liveness probes need no key


def test_the_key_is_read_from_the_environment(monkeypatch):
    from medverse_lab.cli import build_parser

    monkeypatch.setenv("MEDVERSE_API_KEY", "from-env")
    assert build_parser().parse_args(["serve"]).api_key == "from-env"
    assert build_parser().parse_args(["serve", "--api-key", "flag"]).api_key == "flag"


@pytest.mark.parametrize("host,status", [("evil.example", 403), ("evil.example:8000", 403), ("127.0.0.1.nip.io", 403),
                                         ("localhost", 200), ("127.0.0.1:{port}", 200), ("[::1]:{port}", 200),
                                         ("medverse.internal", 200)])
def test_a_foreign_host_header_is_refused(locked, host, status):
    """A page on evil.example whose name resolves to 127.0.0.1 sends Host: evil.example."""
    r = httpx.get(f"{locked.url}/v1/models", headers={"Host": host.format(port=locked.port),
                                                      "Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"]["param"] == "host"


def test_docs_when_asked_document_the_replies(locked):
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{locked.url}/docs", headers=headers).status_code == 200
    schema = httpx.get(f"{locked.url}/openapi.json", headers=headers).json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionResponse")
    assert chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "text/event-stream" in chat["200"]["content"]
    names = set(schema["components"]["schemas"])
    assert {"ChatRequest", "CompletionResponse", "GenerateResponse", "UsageInfo"} <= names
