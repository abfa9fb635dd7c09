"""lowres: train small reasoning LLMs on one GPU — K&K warmup, then GRPO on ≤100 examples."""

__version__ = "0.1.0"
