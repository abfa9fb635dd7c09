"""`lowres chat`: try a model the way a fine-tuning notebook ends — type a question, watch the answer stream.

What is loaded: a run folder's final model (its rlvr adapter on the model it started from, else its merged
warmup, else its base), or any model reference, optionally with a LoRA adapter. The prompt is rendered the
way the run trained it: the recipe's chat template and the tasks' system prompt (the R1 format: reasoning in
<think>, the answer in <answer>), so the model sees what it learned on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lowres.errors import UserError
from lowres.prompting import ChatTemplate
from lowres.tasks.base import R1_SYSTEM

RESET, QUIT = "/reset", "/quit"


@dataclass
class ChatModel:
    model_ref: str
    adapter: Path | None
    chat_template: ChatTemplate
    described: str  # what was loaded, in words


def resolve_chat_model(target: str, adapter: Path | None = None) -> ChatModel:
    """A run folder (with recipe.yaml) → its final model; anything else → a model reference as given."""
    folder = Path(target)
    if not (folder / "recipe.yaml").is_file():
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"{adapter}: no LoRA adapter here (adapter_config.json is missing)")
        return ChatModel(target, adapter, "model", target + (f" + {adapter}" if adapter else ""))
    if adapter is not None:
        raise UserError(f"{target} is a run folder, which chooses its own adapter: leave out --adapter, or give "
                        "a model reference with it")
    from lowres.recipe import load_recipe

    recipe = load_recipe(folder / "recipe.yaml", [f"output.dir={folder.parent}", f"name={folder.name}"])
    template = recipe.model.chat_template
    arms = sorted(folder.glob("rlvr-seed*/adapter")) or [folder / "rlvr" / "adapter"]
    if (arms[0] / "adapter_config.json").is_file():
        start = str(folder / "merge") if recipe.rlvr.start_from == "warmup" else recipe.model.name_or_path
        return ChatModel(start, arms[0], template, f"{arms[0].parent} (GRPO adapter on {start})")
    if (folder / "merge" / "config.json").is_file():
        return ChatModel(str(folder / "merge"), None, template, f"{folder / 'merge'} (the merged warmup model)")
    return ChatModel(recipe.model.name_or_path, None, template,
                     f"{recipe.model.name_or_path} (the run's base model: no stage has finished yet)")


def render_conversation(tokenizer, turns: list[dict[str, str]], template: ChatTemplate, system: str | None) -> str:
    """The prompt for the next answer: the system prompt, then every turn so far."""
    messages = ([{"role": "system", "content": system}] if system else []) + turns
    if template == "model" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The R1 plain-text template (lowres.prompting), continued turn by turn.
    text = f"{system}\n" if system else ""
    for turn in turns:
        text += f"User: {turn['content']}\n" if turn["role"] == "user" else f"Assistant: <think>{turn['content']}\n"
    return text + "Assistant: <think>"


class Chat:
    """A loaded model and the conversation so far."""

    def __init__(self, chosen: ChatModel, system: str | None = R1_SYSTEM, max_new_tokens: int = 512,
                 temperature: float = 0.7, seed: int = 0):
        import torch

        from lowres.hardware import detect
        from lowres.models import load_model_and_tokenizer

        hw = detect("auto")
        self.model, self.tokenizer = load_model_and_tokenizer(chosen.model_ref, hw.torch_dtype, hw.device)
        if chosen.adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, chosen.adapter)
        self.model.eval()
        self.chosen, self.system = chosen, system
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.turns: list[dict[str, str]] = []
        torch.manual_seed(seed)

    def reset(self) -> None:
        self.turns = []

    def answer(self, question: str, write) -> str:
        """Stream the answer to `question` through `write(text)` as it is sampled; return it whole."""
        import torch
        from transformers import TextStreamer

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False):
                write(text)

        self.turns.append({"role": "user", "content": question})
        prompt = render_conversation(self.tokenizer, self.turns, self.chosen.chat_template, self.system)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else \
            {"do_sample": False}
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling,
                                      streamer=_Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True))
        text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        self.turns.append({"role": "assistant", "content": text})
        return text
