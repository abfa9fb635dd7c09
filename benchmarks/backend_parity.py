"""Do both backends train the same algorithm? lowres's SFT and GRPO configs built with TRL's config classes and
with the classes Unsloth generates, compared field by field (desk check 2, W2).

    python benchmarks/backend_parity.py [--recipe demo]

Each side is built in its own process (Unsloth patches TRL for good once imported). On a machine without a GPU
Unsloth is imported on its GPU path with UNSLOTH_ALLOW_CPU=1 and its trainer patch applied by hand, so the
rehearsal (`gpu_check.sh rehearse`) checks the real generated classes too. Exit code 1 when a setting that
shapes training differs; the settings in RUNTIME_ONLY may differ (each says why it changes nothing trained).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Settings that may differ between the backends: they change how a run is executed or logged, not what it trains.
RUNTIME_ONLY = {
    "torch_empty_cache_steps": "frees the CUDA cache every 250 steps: memory housekeeping",
    "logging_nan_inf_filter": "what the log shows for a nan/inf loss, not the update",
    "eval_accumulation_steps": "how evaluation outputs are gathered",
    "generation_kwargs": "None and {} both add nothing to the sampling settings",
    "padding_free": "Unsloth batches without padding where it can: the same tokens, the same loss",
    "dataset_num_proc": "how many processes tokenize the dataset",
}


def build_configs(recipe_name: str) -> dict:
    """lowres's SFTConfig and GRPOConfig for the recipe, as dicts, with whatever trl.SFTConfig/GRPOConfig is."""
    from lowres.hardware import detect
    from lowres.recipe import bundled_recipes, load_recipe
    from lowres.train.rlvr import grpo_config
    from lowres.train.warmup import sft_config

    recipe = load_recipe(bundled_recipes()[recipe_name])
    hw = detect(requested_backend="transformers")  # the same device flags on both sides
    out = Path("lowres-backend-parity")  # never written to: the configs are only built
    configs = {"SFTConfig": sft_config(recipe, hw, out, False, held_out=True),
               "GRPOConfig": grpo_config(recipe, hw, out, False)}
    # Unsloth's generated class names itself like TRL's; its own fields (unsloth_num_chunks…) tell them apart.
    return {name: json.loads(c.to_json_string()) for name, c in configs.items()}


def unsloth_classes() -> None:
    """Import Unsloth and make trl's SFTConfig/GRPOConfig the classes Unsloth generated."""
    import importlib

    import trl
    import unsloth  # noqa: F401
    from unsloth.models import rl

    for trainer_file, config in (("sft_trainer", "SFTConfig"), ("grpo_trainer", "GRPOConfig")):
        if getattr(trl, config).__name__.startswith("Unsloth"):
            continue
        rl._patch_trl_rl_trainers(trainer_file)  # what PatchFastRL does on a GPU
        cache = os.environ.get("UNSLOTH_COMPILE_LOCATION", "unsloth_compiled_cache")
        sys.path.insert(0, cache)
        module = importlib.import_module(f"Unsloth{config.removesuffix('Config')}Trainer")
        setattr(trl, config, getattr(module, f"Unsloth{config}"))


def side(which: str, recipe: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if which == "unsloth":
        import torch

        if not torch.cuda.is_available():
            env["UNSLOTH_ALLOW_CPU"] = "1"  # Unsloth's GPU import path, without a GPU
    done = subprocess.run([sys.executable, __file__, "--side", which, "--recipe", recipe], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"backend_parity: building the {which} configs failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--side", choices=("transformers", "unsloth"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        sys.path.insert(0, str(REPO))
        if args.side == "unsloth":
            unsloth_classes()
        print(json.dumps(build_configs(args.recipe)))
        return 0
    plain, patched = side("transformers", args.recipe), side("unsloth", args.recipe)
    failed = False
    for name in plain:
        a, b = plain[name], patched[name]
        if "unsloth_num_chunks" not in b or "unsloth_num_chunks" in a:
            print(f"{name}: Unsloth's config class was not used on the unsloth side only")
            failed = True
        differ = {k: (a[k], b.get(k)) for k in sorted(a) if a[k] != b.get(k)}
        shaping = {k: v for k, v in differ.items() if k not in RUNTIME_ONLY}
        print(f"{name}: {len(a)} TRL settings compared; runtime-only differences: "
              f"{', '.join(k for k in differ if k in RUNTIME_ONLY) or 'none'}; Unsloth's own settings (not "
              f"TRL's, not compared): {', '.join(sorted(set(b) - set(a))) or 'none'}")
        for key, (ours, theirs) in shaping.items():
            print(f"  DIFFERS {key}: transformers {ours!r}, unsloth {theirs!r}")
        failed |= bool(shaping)
    print("backend parity: " + ("FAILED" if failed else "the same training settings on both backends"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
