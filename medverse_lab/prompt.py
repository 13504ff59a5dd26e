"""The prompt a MedVerse model is trained on and decoded from: one source for both.

A chat turn: system prompt, user turn ``Question:\\n...``, then the assistant turn, which
opens with ``<Think>`` and a newline. With a chat template the tokenizer renders it;
without one the same ChatML shape is written as plain text (what the public MedVerse
client sends).
"""

from __future__ import annotations

#: The public MedVerse client's system prompt (MedVerse14k was built on Qwen2.5 chat turns).
SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
THINK_PREFIX = "<Think>\n"


def user_turn(question: str) -> str:
    """The user turn for a question: ``Question:\\n`` + the question (added once)."""
    return question if question.startswith("Question:") else f"Question:\n{question}"


def chat_prefix(tokenizer, user: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """Everything before the assistant's first word, for a given user turn."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
                   [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if system_prompt else ""
    return f"{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def build_prompt(tokenizer, question: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The engine's prompt for ``question``, ending with ``<Think>`` and a newline."""
    return chat_prefix(tokenizer, user_turn(question), system_prompt) + THINK_PREFIX
