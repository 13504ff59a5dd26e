"""Any OpenAI-compatible completions server as the engine's backend:
``ml.Engine.remote(base_url)`` (a ``vllm serve`` or SGLang process).

Each branch is one ``POST /v1/completions`` with the prompt as token ids, sent the moment
the branch needs its first token, concurrently with the other branches' requests (a
thread pool); the decoder then takes the returned tokens one per step (:mod:`.requests`).
A server that returns the sampled token ids (vLLM does with ``return_token_ids``) keeps
runs token-exact; one that returns only text has it re-tokenized here, and the run says
so (``run.token_exact`` is False).
"""

from __future__ import annotations

import concurrent.futures as cf

from .requests import BranchRequest, RequestExecutor


class RemoteBackend:
    """An HTTP client for one completions server and the thread pool its requests run on."""

    name = "remote"

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 600,
                 max_concurrency: int = 64):
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.model = model or self._served_model()
        self.pool = cf.ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="medverse-remote")

    def _served_model(self) -> str:
        r = self.http.get("/models")
        if r.status_code != 200:
            raise ConnectionError(f"GET {self.base_url}/models answered {r.status_code}: {r.text[:300]}")
        models = [m["id"] for m in r.json().get("data", [])]
        if not models:
            raise ConnectionError(f"{self.base_url} serves no model")
        return models[0]

    def complete(self, r: BranchRequest, encode) -> tuple[list[int], bool]:
        """The tokens the server samples for ``r``, and whether they are its ids (True) or
        its text re-tokenized here (False)."""
        body = {"model": self.model, "prompt": r.prompt, "max_tokens": r.max_tokens, "temperature": r.temperature,
                "top_p": r.top_p, "seed": r.seed, "stop_token_ids": r.stop_token_ids, "ignore_eos": True,
                "skip_special_tokens": False, "spaces_between_special_tokens": False, "return_token_ids": True}
        resp = self.http.post("/completions", json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"POST {self.base_url}/completions for {r.request_id} answered {resp.status_code}: "
                               f"{resp.text[:500]}")
        choice = resp.json()["choices"][0]
        if choice.get("token_ids") is not None:
            return list(choice["token_ids"]), True
        return encode(choice.get("text") or ""), False

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()


class RemoteExecutor(RequestExecutor):
    """Branches of runs as concurrent completions requests to a server."""

    name = "remote"

    def __init__(self, engine):
        super().__init__(engine)
        self.backend: RemoteBackend = engine.compute
        self.futures: dict[cf.Future, str] = {}

    def _start(self, r: BranchRequest) -> None:
        self.futures[self.backend.pool.submit(self.backend.complete, r, self.e.encode)] = r.request_id

    def _pump(self) -> dict[str, list[int]]:
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        out = {}
        for f in done:
            rid = self.futures.pop(f)
            out[rid], exact = f.result()  # an HTTP error raises here, naming the request
            self.finished.add(rid)
            if not exact and rid in self.branch_of:
                self.branch_of[rid][0].token_exact = False
        return out

    def _abort(self, request_id: str) -> None:
        for f, rid in list(self.futures.items()):
            if rid == request_id:
                f.cancel()  # not started yet: never sent; in flight: its reply is dropped
                del self.futures[f]
