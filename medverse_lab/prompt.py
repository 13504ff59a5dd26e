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
    return render_chat(tokenizer, [{"role": "user", "content": user}], system_prompt)


def render_chat(tokenizer, turns: list[dict], system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """A conversation (``[{"role", "content"}, ...]``, ending with the user's turn) rendered
    up to the assistant's first word: the tokenizer's chat template when it has one, else
    ChatML as text. ``system_prompt`` opens it unless the turns bring their own system turn."""
    if system_prompt and not any(t["role"] == "system" for t in turns):
        turns = [{"role": "system", "content": system_prompt}, *turns]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns) + "<|im_start|>assistant\n"


def conversation_prompt(tokenizer, messages: list[dict], system_prompt: str | None = SYSTEM_PROMPT) -> tuple[str, str]:
    """``(question, prompt)`` for a chat conversation: the last user turn is the question;
    every earlier turn (user questions, the assistant's MedVerse turns) is part of the
    prompt, which ends with the assistant's ``<Think>`` line. A ``developer`` turn counts
    as ``system``; a user turn is written ``Question:\n...`` as in training."""
    turns = []
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        turns.append({"role": role, "content": user_turn(m["content"]) if role == "user" else m["content"]})
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return question, render_chat(tokenizer, turns, system_prompt) + THINK_PREFIX


def build_prompt(tokenizer, question: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The engine's prompt for ``question``, ending with ``<Think>`` and a newline."""
    return chat_prefix(tokenizer, user_turn(question), system_prompt) + THINK_PREFIX
