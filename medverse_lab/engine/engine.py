"""The MedVerse engine: plan, then decode independent steps in parallel in one KV cache.

>>> engine = ml.Engine.load("/path/to/checkpoint")        # or ml.Engine(model, tokenizer)
>>> run = engine.run("A 54-year-old man ...", mode="dag")
>>> run.plan, run.steps, run.answer, run.timings
>>> for ev in engine.stream("..."): print(ev)     # TokenEvents and lifecycle events, in order
>>> run2 = engine.rerun(run, step="2", seed=1)

Exactness: every decoded token's logits equal (to float tolerance) those of one
teacher-forced forward over ``run.layout`` with ``ml.attention_mask(run.layout, run.mode)``
and ``ml.position_ids(run.layout, run.mode)``: the engine and training share one rule.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch

from ..modes import ENGINE_MODES, Mode, check_mode
from ..plan import Plan
from ..prompt import SYSTEM_PROMPT, THINK_PREFIX
from ..tokens import TAGS, add_medverse_tokens, to_dtype
from ..topology import read_steps
from .decode import Batch, Decoder, Settings, TokenIds, positive_int, decode_alone, decode_many
from .events import Rerun
from .kv import new_cache, select_slots
from .requests import EXACT_MODES, refuse_mode
from .run import Run, RunStream, TokenEvent

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "teaching-model"
#: the shipped teaching models by the mode each was trained with
TEACHING_MODELS = {"dag": ASSET_DIR, "request": ASSET_DIR.with_name("teaching-model-request")}

#: attention implementations that take the engine's 4-D float mask as is
MASK_ATTENTION = ("sdpa", "eager")

SFT_REFUSED = (
    "mode 'medverse-sft' cannot be decoded: it reproduces the public training collator, under which a step reads "
    "its chunk sibling through the separator after the sibling's </Step> (a sibling still being decoded "
    "in parallel), which no parallel decoder can reproduce. Use mode='layered', the closest mode the engine decodes exactly; 'medverse-sft' "
    "stays available to ml.attention_mask / ml.position_ids for inspection and training.")


def default_model_path(mode: Mode = "dag") -> Path | None:
    """The folder of the embedded teaching model trained with ``mode``, if it is shipped
    (holds a ``config.json``): ``dag`` (the default model) or ``request`` (its sibling
    fine-tuned for the request mode, what a stock serving engine decodes exactly)."""
    if mode not in TEACHING_MODELS:
        raise ValueError(f"no teaching model is trained with mode {mode!r}; shipped: {', '.join(TEACHING_MODELS)}")
    path = TEACHING_MODELS[mode]
    return path if (path / "config.json").is_file() else None


def check_engine_mode(mode: str) -> Mode:
    """``mode`` if the engine decodes it, else a ``ValueError`` that says why and what to use."""
    if mode == "medverse-sft":
        raise ValueError(SFT_REFUSED)
    return check_mode(mode, ENGINE_MODES)


def _check_attention(impl: str | None) -> None:
    if impl not in MASK_ATTENTION:
        raise ValueError(
            f"attention implementation {impl!r} cannot take the 4-D attention mask MedVerse decoding needs "
            f"(each step sees only the prefix and its ancestors, not its siblings). Load the model with "
            f"attn_implementation='sdpa' (the default of Engine.load) or 'eager'.")


class Engine:
    """A causal LM and its tokenizer, ready to decode MedVerse runs.

    ``Engine(model, tokenizer)`` takes any transformers causal LM whose attention takes a
    4-D mask and position ids (``sdpa`` or ``eager``); :meth:`load` reads a checkpoint folder.
    ``add_tags=True`` adds missing MedVerse tags to the tokenizer (and embeddings) with a
    warning; otherwise a tokenizer without them is refused. ``system_prompt`` defaults to
    ``model.config.medverse_system_prompt`` when set, else the public MedVerse client's.
    """

    def __init__(self, model, tokenizer, *, add_tags: bool = False, system_prompt: str | None = None):
        cfg = model.config
        if getattr(cfg, "is_encoder_decoder", False):
            raise ValueError(f"{type(model).__name__} is an encoder-decoder; the engine needs a causal LM")
        _check_attention(getattr(cfg, "_attn_implementation", None))
        missing = _missing_tags(tokenizer)
        if missing and not add_tags:
            raise ValueError(
                f"the tokenizer has no single token for {', '.join(missing)}: it is not a MedVerse tokenizer. "
                "Pass add_tags=True to add them (an untrained model will not use them), or call "
                "ml.add_medverse_tokens(tokenizer, model) and fine-tune")
        if missing:
            warnings.warn(f"added the MedVerse tags {', '.join(missing)} to the tokenizer and resized the "
                          "embeddings; a model not trained with them will not write them", stacklevel=2)
            add_medverse_tokens(tokenizer, model)
        new_cache(cfg)  # refuses sliding-window / shared caches now rather than mid-run
        self.model = model.eval()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self._setup(tokenizer, cfg, system_prompt, "local", None, getattr(model, "generation_config", None))

    def _setup(self, tokenizer, config, system_prompt, backend: str, compute, generation_config=None) -> None:
        self.tokenizer, self.config = tokenizer, config
        #: what a run samples with when not told (the model's generation config): its
        #: temperature and top_p when it samples (``do_sample``), else greedy
        self.sampling = sampling_defaults(generation_config)
        self.system_prompt = system_prompt if system_prompt is not None else \
            getattr(config, "medverse_system_prompt", SYSTEM_PROMPT)
        self.ids = TokenIds.of(tokenizer, self.encode)
        self.tags, self.step_stray = self.ids.tags, self.ids.step_stray
        self._pieces: dict[int, str] = {}
        #: most known tokens a step or the conclusion feeds per forward call: None (all of
        #: them at once) or 1 (token by token, as before chunking; benchmarks compare the two)
        self.step_chunk: int | None = None
        #: what computes the tokens: ``local`` (this model, one key/value cache), ``vllm``
        #: (vLLM in this process) or ``remote`` (an OpenAI-compatible server)
        self.backend = backend
        self.compute = compute

    @classmethod
    def _stock(cls, tokenizer, config, backend: str, compute, system_prompt=None, folder=None) -> "Engine":
        """An engine whose tokens a stock serving engine computes (no model here)."""
        missing = _missing_tags(tokenizer)
        if missing:
            raise ValueError(f"the tokenizer has no single token for {', '.join(missing)}: it is not a MedVerse "
                             "tokenizer, and a served model cannot be given new tags")
        e = cls.__new__(cls)
        e.model, e.device, e.dtype, e.cache_kw = None, torch.device("cpu"), torch.float32, None
        generation = None
        if folder is not None and (Path(folder) / "generation_config.json").is_file():
            from transformers import GenerationConfig

            generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
        e._setup(tokenizer, config, system_prompt, backend, compute, generation)
        return e

    # ----- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, path=None, device=None, dtype=None, trust_remote_code: bool = False, *,
             attn_implementation: str = "sdpa", add_tags: bool = False, system_prompt: str | None = None,
             backend: str = "local", **vllm_options) -> "Engine":
        """Load a local checkpoint folder (``config.json``, ``*.safetensors``, tokenizer files).

        ``backend="local"`` (the default) decodes with the transformers model in one
        key/value cache, every mode. ``backend="vllm"`` hands the folder to vLLM in this
        process (prefix caching on; ``vllm_options`` go to ``vllm.LLM``, e.g.
        ``tensor_parallel_size``, ``gpu_memory_utilization``): it decodes modes ``request``
        and ``sequential`` token for token as the local backend does (greedy), and refuses the
        others; runs have no local cache (``run.cache_bytes`` is 0) and rerun re-sends the
        kept tokens, which vLLM's prefix cache reuses.

        ``path=None`` loads the embedded teaching model (``dag``); its ``request``-trained
        sibling is ``Engine.load(ml.engine.default_model_path("request"))``. ``device`` defaults to CUDA when
        present, else CPU; ``dtype`` to float32 on CPU and to the checkpoint's half type (or
        float32) on CUDA. Weights load only from safetensors, nothing is downloaded, and
        remote code runs only with ``trust_remote_code=True``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if backend not in ("local", "vllm"):
            raise ValueError(f"backend {backend!r}: Engine.load takes 'local' or 'vllm'; for a server use "
                             "ml.Engine.remote(base_url)")
        if vllm_options and backend != "vllm":
            raise TypeError(f"unexpected keyword arguments {sorted(vllm_options)} (they go to vLLM with backend='vllm')")
        _check_attention(attn_implementation)
        if path is None:
            path = default_model_path()
            if path is None:
                raise FileNotFoundError(
                    f"the embedded teaching model is not shipped yet ({ASSET_DIR} holds no config.json); "
                    "load a local checkpoint folder instead: ml.Engine.load('/path/to/checkpoint')")
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder; Engine.load takes a local checkpoint folder "
                                    "with config.json, *.safetensors weights and the tokenizer files")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers checkpoint folder")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"{path} has no *.safetensors weights; the engine loads weights only "
                                    "from safetensors (convert with model.save_pretrained(..., safe_serialization=True))")
        if backend == "vllm":
            return cls._load_vllm(path, dtype, trust_remote_code, system_prompt, vllm_options)
        device = check_device(device)
        if dtype is not None:
            dtype = to_dtype(dtype)
        else:
            dtype = torch.float32
            if device.type == "cuda":
                from transformers import AutoConfig

                saved = getattr(AutoConfig.from_pretrained(path, local_files_only=True,
                                                           trust_remote_code=trust_remote_code), "dtype", None)
                saved = getattr(torch, saved) if isinstance(saved, str) else saved
                dtype = saved if saved in (torch.float16, torch.bfloat16) else torch.float32
        from transformers.utils import logging as hf_logging

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in notebooks and the CLI
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=trust_remote_code,
                attn_implementation=attn_implementation)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        return cls(model.to(device), tokenizer, add_tags=add_tags, system_prompt=system_prompt)

    @classmethod
    def _load_vllm(cls, path, dtype, trust_remote_code, system_prompt, vllm_options) -> "Engine":
        from transformers import AutoConfig, AutoTokenizer

        from .vllm_backend import VllmBackend

        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        dtype = str(to_dtype(dtype)).removeprefix("torch.") if dtype is not None else "float32"
        compute = VllmBackend(path, dtype=dtype, trust_remote_code=trust_remote_code, **vllm_options)
        return cls._stock(tokenizer, config, "vllm", compute, system_prompt, folder=path)

    @classmethod
    def remote(cls, base_url: str, model: str | None = None, api_key: str | None = None, *, tokenizer=None,
               system_prompt: str | None = None, timeout: float = 600, max_concurrency: int = 64) -> "Engine":
        """An engine whose tokens an OpenAI-compatible completions server computes (a
        ``vllm serve`` or SGLang process at ``base_url``, e.g. ``http://127.0.0.1:8000``).

        ``model`` defaults to the first the server lists. The tokenizer (and the model's
        MedVerse settings) are read from ``tokenizer`` (a checkpoint folder or a tokenizer),
        by default from ``model`` when that is a local folder (``vllm serve /path`` serves it
        under that name). Each branch is one request, sent as soon as it can start,
        concurrently; prompts go as token ids, so with a server that returns the sampled ids
        (vLLM) runs are token-exact in modes ``request`` and ``sequential``; other modes are
        refused. ``run.token_exact`` says whether every reply came back as ids.
        """
        from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

        from .remote import RemoteBackend

        compute = RemoteBackend(base_url, model, api_key, timeout=timeout, max_concurrency=max_concurrency)
        source = tokenizer if tokenizer is not None else compute.model
        config = PretrainedConfig()
        if isinstance(source, (str, Path)):
            folder = Path(source).expanduser()
            if not folder.is_dir():
                compute.close()
                raise ValueError(f"the server's model {compute.model!r} is not a local folder: pass tokenizer= "
                                 "(the checkpoint folder it serves) so prompts are tokenized as the server does")
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            if (folder / "config.json").is_file():
                config = AutoConfig.from_pretrained(folder, local_files_only=True)
            return cls._stock(tokenizer, config, "remote", compute, system_prompt, folder=folder)
        return cls._stock(tokenizer, config, "remote", compute, system_prompt)

    # ----- text helpers --------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added; tags become their single tokens)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        """Text of token ids, special tokens (the tags) included, spacing untouched."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def piece(self, token_id: int) -> str:
        """The text of one token (cached; a lone byte of a multi-byte character shows as U+FFFD)."""
        s = self._pieces.get(token_id)
        if s is None:
            s = self._pieces[token_id] = self.decode([token_id])
        return s

    @property
    def default_mode(self) -> str:
        """The mode the model was trained with (``config.medverse_mode``), else ``dag``."""
        mode = getattr(self.config, "medverse_mode", None) or "dag"
        if self.backend != "local" and mode not in EXACT_MODES:
            return "request"  # what a stock engine decodes exactly, as parallel as dag
        return mode

    def __repr__(self) -> str:
        if self.model is None:
            where = self.compute.base_url if self.backend == "remote" else getattr(self.config, "_name_or_path", "")
            return f"Engine(backend={self.backend!r}, {where}, mode={self.default_mode!r})"
        n = sum(p.numel() for p in self.model.parameters())
        return (f"Engine({type(self.model).__name__}, {n / 1e6:.1f}M params, {self.device}, {self.dtype}, "
                f"attention={self.model.config._attn_implementation}, mode={self.default_mode!r})")

    # ----- running -----------------------------------------------------------------------
    def run(self, question: str, mode: Mode | None = None, plan: Plan | str | None = None, seed: int = 0,
            temperature: float | None = None, top_p: float | None = None, max_plan_tokens: int = 512, max_step_tokens: int = 256,
            max_conclusion_tokens: int = 256, on_token=None) -> Run:
        """Answer ``question``: plan (or force ``plan``), decode the steps by ``mode``, conclude.

        ``mode=None`` uses the model's ``medverse_mode`` (default ``dag``); ``dag`` starts a
        step the moment its parents finish, ``layered`` runs chunk by chunk, ``speculative``
        all steps at once, ``sequential`` one after another; ``request`` schedules as
        ``dag`` but each step reads its ancestors' blocks again as its own request, as a
        stock serving engine decodes it (``run.layout`` is then the request layout). ``plan`` (a :class:`Plan` or
        outline text) is validated and forced instead of Phase I. ``temperature=0`` is
        greedy; ``temperature`` and ``top_p`` default to the model's generation config
        (``engine.sampling``: greedy for the teaching models); ``seed`` fixes sampling. A step ends at ``</Step>`` or after
        ``max_step_tokens`` body tokens (then ``</Step>`` is forced and ``run.events`` says
        so). A model-written plan that fails validation does not stop the run: it continues
        ``sequential`` with the PlanError in ``run.events``. ``on_token(TokenEvent)`` is
        called for every token from the plan on, as it enters the cache.
        """
        d = self.decoder(question, mode=mode, plan=plan, seed=seed, temperature=temperature, top_p=top_p,
                         max_plan_tokens=max_plan_tokens, max_step_tokens=max_step_tokens,
                         max_conclusion_tokens=max_conclusion_tokens, emit=on_token is not None)
        return _drain(decode_alone(d, self.executor()), on_token)

    def stream(self, question: str, **kwargs) -> RunStream:
        """Like :meth:`run` (same keywords), as an iterator of what happens, in order: a
        :class:`TokenEvent` per token and the lifecycle events (:class:`PhaseStart`,
        :class:`StepStart`, :class:`StepEnd`, :class:`ForcedClose`, :class:`PlanRejected`)
        as they occur; match them by type. After the loop, ``.run`` is the finished
        :class:`Run`. Arguments are checked at the call, before anything is decoded."""
        if "on_token" in kwargs:
            raise TypeError("stream() yields the tokens itself; on_token belongs to run()")
        return RunStream(decode_alone(self.decoder(question, emit=True, **kwargs), self.executor()))

    def run_many(self, questions, batch_size: int = 8, keep_cache: bool = False, progress: bool = False,
                 **kwargs) -> list[Run]:
        """Answer several questions at once; returns their runs in the order given.

        Up to ``batch_size`` runs decode together: one forward call feeds the running
        branches of every run in the batch, each run seeing only its own cache slots, and
        a finished run makes room for the next question at once (continuous batching).
        Each run equals the same question decoded alone with :meth:`run` (the same keywords,
        which apply to every question). The runs' caches are dropped unless
        ``keep_cache=True`` (then :meth:`rerun` works on them). ``progress`` shows a bar.
        """
        from tqdm.auto import tqdm

        questions = list(questions)
        positive_int("batch_size", batch_size)
        if "on_token" in kwargs:
            raise TypeError("run_many() takes no on_token; use stream() to watch one run")
        makers = [self.decoder(q, **kwargs) for q in questions]  # every argument checked before decoding
        runs: list[Run | None] = [None] * len(questions)
        with tqdm(total=len(questions), desc="runs", disable=not progress, mininterval=1.0) as bar:
            for i, run in decode_many(self, makers.__getitem__, len(questions), batch_size, keep_cache):
                runs[i] = run
                bar.update()
        return runs

    def check_mode(self, mode: str) -> Mode:
        """``mode`` if this engine decodes it exactly, else a ``ValueError`` saying why and
        what to use (a stock-engine backend takes ``request`` and ``sequential`` only)."""
        mode = check_engine_mode(mode)
        if self.backend != "local":
            refuse_mode(mode, self.backend)
        return mode

    def decoder(self, question: str, *, mode: Mode | None = None, plan: Plan | str | None = None, seed: int = 0,
                temperature: float | None = None, top_p: float | None = None, max_plan_tokens: int = 512,
                max_step_tokens: int = 256, max_conclusion_tokens: int = 256, emit: bool = False,
                prompt: str | None = None) -> Decoder:
        """A :class:`~medverse_lab.engine.decode.Decoder` for ``question`` with every
        argument checked (raising before any decoding); :meth:`run` keywords. ``prompt``
        (text ending with the assistant's ``<Think>`` line) replaces the built prompt."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question is empty ({question!r}): pass the question text (with its options)")
        mode = self.check_mode(self.default_mode if mode is None else mode)
        if plan is not None:
            if isinstance(plan, str):
                plan = Plan.from_outline(plan)
            if not isinstance(plan, Plan):
                raise TypeError(f"plan must be an ml.Plan or outline text, not {type(plan).__name__}")
            plan.validate()
        temperature = self.sampling["temperature"] if temperature is None else temperature
        top_p = self.sampling["top_p"] if top_p is None else top_p
        settings = Settings.checked(seed=seed, temperature=temperature, top_p=top_p, max_plan_tokens=max_plan_tokens,
                                    max_step_tokens=max_step_tokens, max_conclusion_tokens=max_conclusion_tokens)
        if prompt is not None and not (isinstance(prompt, str) and prompt.endswith(THINK_PREFIX)):
            raise ValueError(f"prompt must be text ending with {THINK_PREFIX!r} (the assistant turn's first line)")
        return Decoder.fresh(self, question, mode, plan, settings, emit=emit, prompt=prompt)

    # ----- rerun -------------------------------------------------------------------------
    def rerun(self, run: Run, step, seed: int | None = None, text: str | None = None,
              description: str | None = None, on_token=None) -> Run:
        """Decode ``step`` again, with what depends on it and the conclusion; reuse the rest.

        Dropped from the cache: the step, every step that reads it under ``run.mode``
        (its descendants for ``dag`` and ``request``; every later chunk for ``layered``;
        every later step for ``sequential``) and the conclusion. Every other slot is kept as it is (the cache is
        compacted), so untouched steps stay token-identical. ``seed=None`` uses
        ``run.seed + generation + 1``; ``text`` forces the step's body (fed in one forward
        call). ``description`` rewrites the step in the plan: since every step and the
        conclusion read the plan, that invalidates all of Phase II, so the prompt is kept and
        everything from the plan on is decoded again with the edited plan forced
        (``run.events`` says so). Returns a new :class:`Run`; ``run`` is left usable.
        """
        events = self._start_rerun(run, step, seed, text, description, emit=on_token is not None)
        return _drain(events, on_token)

    def _start_rerun(self, run: Run, step, seed, text, description, emit):
        if not isinstance(run, Run):
            raise TypeError(f"rerun takes a Run, not {type(run).__name__}")
        if run._cache is None and run.backend == "local":
            raise ValueError("this run's cache was released (run.release()); rerun needs it: run the question again")
        sid = str(step).strip()
        if sid not in run.plan:
            raise KeyError(f"no step {step!r} in the run's plan; steps are {run.plan.ids}")
        plan = run.plan
        if description is not None:
            if not isinstance(description, str) or "\n" in description or not description.strip():
                raise ValueError("description must be one non-empty line of text")
            from dataclasses import replace

            plan = Plan([replace(s, description=description.strip()) if s.id == sid else s for s in plan.steps])
        gen_no = run.generation + 1
        settings = Settings.checked(**{**run.settings, "seed": run.seed + gen_no if seed is None else seed})
        forced = None if text is None else self.encode(text)
        if description is not None:
            note = Rerun(sid, tuple(plan.ids), 0, settings.seed, forced is not None, plan[sid].description,
                         "a new description changes the plan every step reads: Phase II decoded again")
            d = Decoder.fresh(self, run.question, run.mode, plan, settings, emit=emit,
                              forced_bodies={sid: forced} if forced is not None else None, generation=gen_no,
                              first_events=[note])
            return decode_alone(d, self.executor())
        reads = read_steps(plan, run.mode)  # what each step sees or (request) repeats
        drop = {sid} | {t for t in plan.ids if sid in reads[t]} | {"conclusion"}
        if run.backend != self.backend:
            raise ValueError(f"this run was decoded on the {run.backend} backend; rerun it with an engine of that backend")
        d, keep = Decoder.resume(self, run, plan, sid, drop, forced, settings, gen_no, emit=emit)
        cache = None
        if self.backend == "local":
            with torch.inference_mode():
                cache = select_slots(run._cache, torch.tensor(keep, device=self.device), self.model.config)
        return decode_alone(d, self.executor(cache))

    def executor(self, cache=None):
        """What computes this engine's tokens for a set of runs: a
        :class:`~medverse_lab.engine.decode.Batch` over the model (``cache``: a rerun's kept
        slots), or the vLLM / remote executor (:mod:`.requests`)."""
        if self.backend == "vllm":
            from .vllm_backend import VllmExecutor

            return VllmExecutor(self)
        if self.backend == "remote":
            from .remote import RemoteExecutor

            return RemoteExecutor(self)
        return Batch(self, cache)


def _missing_tags(tokenizer) -> list[str]:
    """The MedVerse tags ``tokenizer`` has no single token for."""
    vocab = tokenizer.get_vocab()
    return [t for t in TAGS if t not in vocab]


def check_device(device) -> torch.device:
    """``device`` as a torch device (default: CUDA when present, else CPU); a ``ValueError``
    in one line for a name torch does not know or a GPU this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA GPU torch can use (torch {torch.__version__}); "
                         "use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use --device cpu")
    return dev


def sampling_defaults(generation_config) -> dict:
    """``{"temperature", "top_p"}`` a run uses when not told: the generation config's when it
    samples (``do_sample``), else greedy (temperature 0)."""
    g = generation_config
    if g is None or not getattr(g, "do_sample", False):
        return {"temperature": 0.0, "top_p": 1.0}
    return {"temperature": float(g.temperature if g.temperature is not None else 1.0),
            "top_p": float(g.top_p if g.top_p is not None else 1.0)}


def _drain(events, on_token) -> Run:
    """Run a decode generator to the end, handing each token event to ``on_token``
    (lifecycle events are in ``run.events``)."""
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value
        if isinstance(ev, TokenEvent):
            on_token(ev)


__all__ = ["Engine", "Run", "RunStream", "TokenEvent", "Settings", "Batch", "default_model_path", "check_engine_mode",
           "SFT_REFUSED"]
