"""A tiny GRPO setup that trains on a CPU in seconds, shared by test_grpo_learns.py and test_grpo_replay.py.

A randomly initialised Llama (one layer, hidden 64) over a 32-word vocabulary, four short prompts, and a
reward that pays the share of the completion's slots filled with one chosen word (TARGET): a random model
writes it about 1 time in 32, and nothing but the reward can teach it to write it everywhere. `tiny_setup`
gives lowres's GRPO trainer class and GRPOConfig for it, as `lowres_grpo_trainer` and `grpo_config` build them
for a CPU from a recipe. Not a test module: imported by name (pytest puts this folder on sys.path), and by the
subprocess test_grpo_replay.py kills.
"""

import functools

import torch

WORDS = ["<pad>", "<eos>", "<unk>", *"abcdefghijklmnopqrstuvwxyz", "0", "1", "2"]  # 32
TARGET = "z"
TARGET_ID = WORDS.index(TARGET)  # the WordLevel vocabulary numbers WORDS in order
PROMPTS = ["a b c", "d e f g", "h i", "j k l m"]  # different lengths: left padding in the shared batches
COMPLETION_LENGTH = 8
CHANCE = 1 / len(WORDS)


@functools.cache
def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def target_share(completion_ids, **kwargs):
    """The share of the completion's slots filled with TARGET (an early end of sequence leaves slots empty)."""
    return [sum(token == TARGET_ID for token in ids) / COMPLETION_LENGTH for ids in completion_ids]


target_share.__name__ = "target_share"


def tiny_model(seed: int, lora):
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # initializer_range 0.1 (not 0.02): the LM head is frozen under LoRA, and its rows must be long enough
    # for a logit margin that puts ~0.99 of the probability on one word; the first logits stay small (std ~1).
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(WORDS), max_position_embeddings=64,
                         initializer_range=0.1, pad_token_id=WORDS.index("<pad>"),
                         eos_token_id=WORDS.index("<eos>"), bos_token_id=None)
    return get_peft_model(LlamaForCausalLM(config), lora)


def tiny_setup(out_dir, steps: int, seed: int, name: str = "tiny-grpo", **rlvr):
    """(recipe, hardware, GRPOConfig) for `steps` GRPO steps of the tiny model on a CPU: the recipe's
    defaults (loss dapo, group-scaled rewards, temperature 0.7, top_p 0.95, linear schedule, fused AdamW,
    LoRA r 16 on every projection) but for what a tiny model learning in seconds needs, with lowres's fast
    paths on whatever the CPU (auto would leave bf16 off without AVX512-BF16); `rlvr` overrides the
    recipe's rlvr section."""
    from lowres.hardware import Hardware
    from lowres.recipe import recipe_from_dict
    from lowres.train.compat import ensure_logprob_kernel
    from lowres.train.rlvr import grpo_config

    ensure_logprob_kernel(on_cuda=False)
    rlvr = {"learning_rate": 1e-2, "max_steps": steps, "per_device_train_batch_size": 16, "num_generations": 8,
            "max_completion_length": COMPLETION_LENGTH, "save_steps": 10 * steps,
            "zero_variance_groups": "skip", "rollout_dtype": "bf16", "loss_dtype": "bf16", **rlvr}
    recipe = recipe_from_dict({"name": name, "model": {"name_or_path": "tiny"},
                               "output": {"dir": str(out_dir)}, "rlvr": rlvr}, "test")
    cpu = Hardware("cpu", None, None, True, "transformers", "fp32")
    return recipe, cpu, grpo_config(recipe, cpu, out_dir, gradient_checkpointing=False, seed=seed)
