"""Turning a task's chat messages into the exact text a model sees."""

from __future__ import annotations

from typing import Literal

ChatTemplate = Literal["model", "r1"]


def render_prompt(tokenizer, messages: list[dict[str, str]], chat_template: ChatTemplate = "model") -> str:
    """The prompt text, ending where the assistant's reply starts.

    model: the tokenizer's own chat template (instruct models).
    r1:    DeepSeek-R1-Zero's plain-text template (base models without a chat template); the
           reply starts inside <think>, as R1-Zero's does.
    """
    if chat_template == "model" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    user = "\n".join(m["content"] for m in messages if m["role"] == "user")
    head = f"{system}\n" if system else ""
    return f"{head}User: {user}\nAssistant: <think>"
