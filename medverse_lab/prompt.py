"""The prompt a MedVerse model is trained on and decoded from: one function, used by both."""

from __future__ import annotations

SYSTEM = ("You are a medical expert. Plan the reasoning as steps with dependencies, "
          "execute the steps, then conclude with the answer.")


def chat_prefix(tokenizer, user: str, system: str | None = SYSTEM) -> str:
    """The text before the assistant's answer: the tokenizer's chat template with a
    generation prompt when it has one, else a plain ``System:/User:/Assistant:`` form."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    head = f"System: {system}\n" if system else ""
    return f"{head}User: {user}\nAssistant: "


def prompt_text(tokenizer, user: str, system: str | None = SYSTEM) -> str:
    """What the engine feeds before decoding: the chat prefix, then ``<Think>`` and a newline."""
    return chat_prefix(tokenizer, user, system) + "<Think>\n"
