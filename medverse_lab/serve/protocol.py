"""The server's wire protocol: typed request and reply models, typed errors.

Everything a client sends or receives is a pydantic model here, so the OpenAPI schema
documents the replies as well as the requests, and a refusal is an :class:`ApiError` that
carries the offending field as data (``param``), never parsed out of a message. Nothing
here knows about the engine or the web framework (:mod:`.service` and :mod:`.app` do).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

#: the most tokens a request may ask for
MAX_TOKENS = 32768
#: the largest request body accepted, in bytes
MAX_BODY = 1 << 20
#: seeds are 64-bit signed integers (torch takes them; OpenAI and vLLM document int64)
SEED_RANGE = (-(2 ** 63), 2 ** 63 - 1)
#: the most choices one request may ask for (``n``)
MAX_N = 16


# ----- errors ----------------------------------------------------------------------------------
class ApiError(Exception):
    """A request the server refuses, in OpenAI's error shape: ``status``, ``type``, the
    field at fault (``param``, dotted path into the body) and a message for people."""

    status, kind = 400, "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, *, headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.headers = message, param, headers or {}

    def body(self) -> dict:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.kind, param=self.param,
                                             code=self.status)).model_dump()


class InvalidRequest(ApiError):
    """400: a field's value is wrong (``param`` names it)."""


class Unauthorized(ApiError):
    status, kind = 401, "authentication_error"


class NotFound(ApiError):
    status, kind = 404, "NotFoundError"  # vLLM's type for an unknown model


class MethodNotAllowed(ApiError):
    status = 405


class TooLarge(ApiError):
    status = 413


class Overloaded(ApiError):
    """503 with ``Retry-After``: the queue is full, a request waited too long, or the server
    is shutting down."""

    status, kind = 503, "server_overloaded"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, None, headers={"Retry-After": str(max(1, int(retry_after)))})


class ServerError(ApiError):
    status, kind = 500, "server_error"


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """Every error reply: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


# ----- request pieces --------------------------------------------------------------------------
def _unicode(text: str) -> str:
    """JSON may carry a lone surrogate (``"\\ud800"``), which is no text a tokenizer can read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"has a lone surrogate at character {exc.start}: not valid Unicode text") from None
    return text


#: text from a client: valid Unicode (no lone surrogates)
Text = Annotated[str, AfterValidator(_unicode)]


class _Body(BaseModel):
    # unknown fields are ignored (clients send many); the ones we cannot honour are named below
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    """A content part; only text parts are read (the model reads text)."""

    type: Literal["text"]
    text: Text


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class PhaseCaps(_Body):
    """MedVerse extras: the most tokens of each phase (the plan, every step, the conclusion),
    the engine's own limits; ``max_tokens`` caps the whole reply as OpenAI defines it."""

    max_plan_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_step_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_conclusion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    mode: Text | None = None  # the engine's mode for this request (default: the server's)
    plan: Text | None = None  # an outline to force instead of Phase I


class _OpenAIBody(PhaseCaps):
    model: Text | None = None
    temperature: float | None = Field(None, ge=0, le=2)  # None: the model's generation config
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # accepted so clients that always send them work; refused when set to what we cannot do
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: Any = None
    functions: list | None = None

    # silently ignoring these would hand a client something other than it asked for
    @field_validator("response_format")
    @classmethod
    def _no_structured_output(cls, value):
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("a MedVerse model writes its plan, steps and conclusion; structured output "
                             "(json_object, json_schema) is not served")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value):
        if value:
            raise ValueError("tool calling is not served by a MedVerse model")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value):
        if value not in (None, "none"):
            raise ValueError("tool calling is not served by a MedVerse model")
        return value

    def check(self) -> None:
        """Checks that read more than one field; an :class:`InvalidRequest` names the field."""
        if getattr(self, "top_logprobs", None) and not getattr(self, "logprobs", None):
            raise InvalidRequest("top_logprobs needs logprobs: true", "top_logprobs")

    @property
    def cap(self) -> int | None:
        """The most tokens of the whole reply (``max_completion_tokens`` wins, as OpenAI's)."""
        return self.max_completion_tokens or self.max_tokens


class ChatRequest(_OpenAIBody):
    """``POST /v1/chat/completions``: the conversation so far; the last turn is the user's
    question. Earlier turns (system, user, assistant) are part of the prompt."""

    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("messages")
    @classmethod
    def _ends_with_a_question(cls, messages):
        turns = [m for m in messages if m.role not in ("system", "developer")]
        if not turns or turns[-1].role != "user" or not turns[-1].text().strip():
            raise ValueError("the last turn must be a non-empty message with role 'user' (the question)")
        return messages

    @property
    def n_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_OpenAIBody):
    """``POST /v1/completions``: one prompt (the question, or a rendered chat prompt)."""

    prompt: Text | list[Text]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("one prompt per request")
            prompt = prompt[0]
        if not prompt.strip():
            raise ValueError("is empty")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo):
        if echo:
            raise ValueError("not served (the reply is the MedVerse turn after the prompt)")
        return echo

    @property
    def n_logprobs(self) -> int | None:
        return self.logprobs


class SamplingParams(_Body):
    """SGLang's ``sampling_params``; ``max_new_tokens`` caps the whole reply."""

    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    stop: Text | list[Text] | None = None
    skip_special_tokens: bool = True
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    sampling_seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])


class GenerateRequest(PhaseCaps):
    """``POST /generate``: SGLang's native shape, as the public MedVerse client sends it."""

    text: Text = Field(min_length=1)
    sampling_params: SamplingParams = SamplingParams()
    stream: bool = False


# ----- replies ---------------------------------------------------------------------------------
class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A reply token's log-probability under the model (raw logits). A token the engine
    wrote itself (a step header, a forced close, a given plan) has ``forced: true``,
    ``logprob`` 0 (the engine put it there with certainty) and no alternatives."""

    top_logprobs: list[TopLogprob] = []
    forced: bool = False


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists."""

    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []


class PlanStep(BaseModel):
    id: str
    description: str
    deps: list[str]


class MedverseInfo(BaseModel):
    """What the turn held: the plan, each step's text, the conclusion, the answer, the mode
    and the timings (absent fields: the reply was cut before they were decoded)."""

    mode: str | None = None
    requested_mode: str | None = None
    plan: list[PlanStep] | None = None
    outline: str | None = None
    steps: dict[str, str] | None = None
    conclusion: str | None = None
    answer: str | None = None
    timings: dict[str, float] | None = None
    plan_error: str | None = None
    forced_closes: list[dict[str, Any]] = []
    stopped_by: str | None = None


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChoiceLogprobs | None = None
    medverse: MedverseInfo | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    medverse: MedverseInfo | None = None  # the first choice's (kept for clients that read it there)


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None
    medverse: MedverseInfo | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    medverse: MedverseInfo | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class StreamTokens(BaseModel):
    """The tokens each branch just decoded (in decode order), and at the end the summary."""

    tokens: list[dict[str, str]] = []
    summary: MedverseInfo | None = None
    stopped_by: str | None = None


class ChatStreamChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a chat stream (``data: {...}``); the stream ends with
    ``data: [DONE]``. With ``stream_options.include_usage`` the last chunk before it has
    no choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None
    medverse: StreamTokens | None = None


class CompletionStreamChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionStreamChoice]
    usage: UsageInfo | None = None
    medverse: StreamTokens | None = None


class GenerateMeta(BaseModel):
    id: str
    finish_reason: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    e2e_latency: float
    medverse: MedverseInfo


class GenerateResponse(BaseModel):
    text: str
    meta_info: GenerateMeta


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "medverse-lab"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "draining"]
    model: str
    mode: str
    running: int
    waiting: int
    prefilling: int
    requests: int
    finished: int
    cancelled: int
    refused: int
    timed_out: int
    forward_calls: int
    max_batch_seen: int
    rss_mb: float
