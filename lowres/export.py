"""`lowres export`: a run's final model as one folder you can use elsewhere.

The folder holds the merged 16-bit model (the RLVR adapter merged into the model it started from; the
merged warmup model for a run without RLVR), its tokenizer and generation_config, the chat template the
model was trained with (R1's plain-text template is written as the tokenizer's chat_template, so
`apply_chat_template` gives the training prompt), and a model card README.md with the recipe, the data,
the eval table and the run's plots. Optional: an Ollama Modelfile (and `ollama create`), a GGUF file
(llama.cpp's converter), and an upload to the Hugging Face Hub.

The folder is built under `<out>.partial` and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lowres.artifacts import building_folder, disk_guard, output_folder, read_json, write_json, write_text
from lowres.errors import OutOfMemory, UserError
from lowres.tasks.base import R1_SYSTEM
from lowres.ui import console

LLAMA_CPP_HINT = ("get llama.cpp's converter: git clone https://github.com/ggml-org/llama.cpp && pip install -r "
                  "llama.cpp/requirements/requirements-convert_hf_to_gguf.txt, then pass --gguf --llama-cpp llama.cpp")

# R1-Zero's plain-text template (lowres.prompting.render_prompt with chat_template "r1") as Jinja, so
# that `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` gives the training prompt.
# Without a system message it uses the R1 system prompt every task trained with (tasks.base.r1_messages).
R1_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system=[], user=[], has_system=false, reply='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.system = ns.system + [m['content']] -%}"
    "{%- set ns.has_system = true -%}"
    "{%- elif m['role'] == 'user' -%}{%- set ns.user = ns.user + [m['content']] -%}"
    "{%- elif m['role'] == 'assistant' -%}{%- set ns.reply = m['content'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set system = ns.system | join('\\n') if ns.has_system else " + json.dumps(R1_SYSTEM) + " -%}"
    "{%- if system -%}{{ system }}\n{% endif -%}"
    "User: {{ ns.user | join('\\n') }}\nAssistant: <think>"
    "{%- if ns.reply -%}{{ ns.reply }}{{ eos_token }}{%- endif -%}"
)

# Ollama's Go templates for the two chat templates lowres trains with.
OLLAMA_R1_TEMPLATE = """{{ if .System }}{{ .System }}
{{ end }}User: {{ .Prompt }}
Assistant: <think>{{ .Response }}"""
OLLAMA_CHATML_TEMPLATE = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""


@dataclass
class Source:
    """What to export: the model to merge into, the adapter (if any), and the run it came from."""

    base_ref: str                 # what was loaded: a folder, hub id or embedded:NAME
    adapter: Path | None
    chat_template: str            # "model" or "r1"
    run_dir: Path | None = None
    recipe: object | None = None  # lowres.recipe.Recipe
    verify_prompts: int = 3
    tolerance: float = 1e-2
    dtype: str = "auto"
    notes: list[str] = field(default_factory=list)


def _has_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def find_source(path: Path, adapter: Path | None = None, chat_template: str | None = None) -> Source:
    """Read RUN_OR_MODEL: a `lowres run` folder, or a model folder (optionally with --adapter)."""
    from lowres.models import resolve_model

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such folder; give a run folder (runs/<name>) or a model folder")
    if not path.is_dir():
        raise UserError(f"{path}: is a file; give a run folder (runs/<name>) or a model folder")
    if (path / "config.json").is_file():
        if adapter is not None and not _has_adapter(Path(adapter)):
            raise UserError(f"--adapter {adapter}: no LoRA adapter here (adapter_config.json is missing)")
        resolve_model(str(path))  # one line if the folder lacks its weights
        return Source(str(path), Path(adapter) if adapter else None, chat_template or "model")
    if not (path / "recipe.yaml").is_file():
        raise UserError(f"{path}: neither a lowres run folder (runs/<name> with recipe.yaml) nor a model folder "
                        "(config.json)")
    if adapter is not None:
        raise UserError("--adapter goes with a model folder; a run folder's adapter is its rlvr/adapter")
    from lowres.recipe import load_recipe

    recipe = load_recipe(path / "recipe.yaml")
    merged = path / "merge"
    common = {"chat_template": chat_template or recipe.model.chat_template, "run_dir": path, "recipe": recipe,
              "verify_prompts": recipe.merge.verify_prompts, "tolerance": recipe.merge.tolerance,
              "dtype": recipe.model.dtype}
    if "rlvr" in recipe.stages:
        rlvr_adapter = path / "rlvr" / "adapter"
        if not _has_adapter(rlvr_adapter):
            raise UserError(f"{path}: the run has no RLVR adapter yet ({rlvr_adapter}); finish it with "
                            f"`lowres run {path / 'recipe.yaml'}`")
        if recipe.rlvr.start_from == "warmup":
            if not (merged / "config.json").is_file():
                raise UserError(f"{path}: the merged warmup model ({merged}) is missing; rerun the run's merge stage")
            return Source(str(merged), rlvr_adapter, **common)
        resolve_model(recipe.model.name_or_path)
        return Source(recipe.model.name_or_path, rlvr_adapter, **common)
    if "merge" in recipe.stages and (merged / "config.json").is_file():
        return Source(str(merged), None, **common)
    raise UserError(f"{path}: the run has no model to export (no rlvr/adapter and no merged warmup model in merge/)")


# ---------------------------------------------------------------- checks before any work

def _hub_offline() -> bool:
    import huggingface_hub.constants as hub_constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(hub_constants.HF_HUB_OFFLINE)


def check_push(repo_id: str) -> None:
    """Fail before the merge when an upload cannot work: offline, or no token."""
    if _hub_offline():
        raise UserError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set (no network); unset it, or export "
                        "without --push-to-hub and upload the folder later")
    from huggingface_hub import get_token

    if not get_token():
        raise UserError(f"--push-to-hub {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN")


def llama_cpp_converter(llama_cpp: Path | None) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py under --llama-cpp, or None when no --llama-cpp was given."""
    if llama_cpp is None:
        return None
    script = Path(llama_cpp).expanduser() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise UserError(f"--llama-cpp {llama_cpp}: no convert_hf_to_gguf.py there; {LLAMA_CPP_HINT}")
    return script


def _check_out(out: Path, force: bool, source: Path) -> None:
    out = out.expanduser()
    if out.exists() and not force:
        raise UserError(f"{out}: already exists; pass --force to overwrite it, or choose another --out")
    src = source.expanduser().resolve()
    if out.resolve() == src or out.resolve() in src.parents:
        raise UserError(f"--out {out}: would replace the model being exported; choose another folder")
    output_folder(out.parent, "folder for the exported model")


# ---------------------------------------------------------------- the model card and the Modelfile

def _stop_tokens(tokenizer, generation_config) -> list[str]:
    ids = getattr(generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    stops = []
    for token_id in ids:
        token = tokenizer.convert_ids_to_tokens(int(token_id))
        if token and token not in stops:
            stops.append(token)
    return stops


def ollama_template(chat_template: str, tokenizer_template: str | None) -> str:
    if chat_template == "r1":
        return OLLAMA_R1_TEMPLATE
    if tokenizer_template and "<|im_start|>" in tokenizer_template:
        return OLLAMA_CHATML_TEMPLATE
    raise UserError("--ollama: the model's own chat template is not ChatML, which is the one lowres can write as "
                    "an Ollama TEMPLATE; export with --chat-template r1, or write the Modelfile's TEMPLATE by hand")


def modelfile_text(from_: str, template: str, system: str | None, stops: list[str]) -> str:
    lines = [f"FROM {from_}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def warmup_in_4bit(source: Source) -> bool:
    """Whether the run's warmup loaded its base in 4-bit (QLoRA): what its summary.json records, else the
    recipe's warmup.load_in_4bit as this machine resolves it."""
    from lowres.hardware import resolve_load_in_4bit

    summary = read_json(source.run_dir / "warmup" / "summary.json") if source.run_dir is not None else None
    if isinstance(summary, dict) and isinstance(summary.get("load_in_4bit"), bool):
        return summary["load_in_4bit"]
    return resolve_load_in_4bit(source.recipe.warmup.load_in_4bit)[0]


def unchanged_note(source: Source) -> str | None:
    """Why the exported model equals a model it was made from, or None: the adapter merged in, and (for a run
    whose model is its merged warmup model) the warmup adapter, are still at their initialisation (every LoRA B
    matrix zero: no training step moved them)."""
    from lowres.train.merge import adapter_is_unchanged

    parts, equals = [], None
    if source.adapter is not None:
        if not adapter_is_unchanged(source.adapter):
            return None
        parts.append(f"the adapter {source.adapter}")
        equals = source.base_ref
    run = source.run_dir
    if run is not None and Path(source.base_ref) == run / "merge" and adapter_is_unchanged(run / "warmup" / "adapter"):
        parts.append(f"the warmup adapter {run / 'warmup' / 'adapter'}")
        equals = source.recipe.model.name_or_path
    if equals is None:
        return None
    return (f"the exported model equals {equals}: {' and '.join(parts)} {'are' if len(parts) > 1 else 'is'} unchanged "
            "from initialisation (every LoRA B matrix is zero), so training changed nothing")


def model_card(source: Source, report: dict | None, dtype: str, system: str | None, files: list[str]) -> str:
    from lowres.recipe import dump_recipe
    from lowres.report import collect, results_markdown

    recipe = source.recipe
    name = recipe.name if recipe is not None else Path(source.base_ref).name
    lines = [f"# {name}\n"]
    if recipe is not None and recipe.description:
        lines.append(f"{recipe.description}\n")
    made = (f"the LoRA adapter `{source.adapter}` merged into `{source.base_ref}`" if source.adapter
            else f"`{source.base_ref}`")
    lines.append(f"Exported by `lowres export`: {made}, saved in {dtype} (a normal transformers folder).")
    unchanged = unchanged_note(source)
    if unchanged:
        lines.append(f"\n**Warning: {unchanged}.**\n")
    if report is not None:
        lines.append(f"The merge was checked: the largest logit difference from base+adapter was "
                     f"{report['max_logit_diff']:.2e} ({report['relative_diff']:.2e} relative) on "
                     f"{report['prompts']} prompts (allowed {report['allowed']}).")
    lines.append("")
    lines.append("## Prompt format\n")
    if source.chat_template == "r1":
        lines.append("Trained with DeepSeek-R1-Zero's plain-text template, saved as the tokenizer's chat_template "
                     "(without a system message it uses the R1 system prompt below). The reply starts inside "
                     "`<think>`, and ends with the answer in `<answer> </answer>`.\n")
    else:
        lines.append("Trained with the tokenizer's own chat template, with the system prompt below.\n")
    if system:
        lines += ["System prompt:\n", "```text", system, "```\n"]
    lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained('PATH')",
              "tokenizer = AutoTokenizer.from_pretrained('PATH')",
              "messages = [{'role': 'system', 'content': SYSTEM}, {'role': 'user', 'content': 'your question'}]",
              "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)", "```\n"]
    if recipe is not None:
        data = recipe.data
        lines.append("## Training data\n")
        stages = ", ".join(recipe.stages)
        lines.append(f"- stages: {stages}")
        if "warmup" in recipe.stages:
            warm = data.warmup
            what = (f"{warm.n_puzzles} solver-written Knights & Knaves traces (people {warm.people}, seed {warm.seed})"
                    if warm.source == "kk-solver" else f"`{warm.source}`")
            four_bit = warmup_in_4bit(source)
            lines.append(f"- warmup: {'QLoRA' if four_bit else 'LoRA'} SFT on {what}"
                         + (" (base weights in 4-bit NF4)" if four_bit else ""))
        if "rlvr" in recipe.stages:
            lines.append(f"- RLVR: GRPO on {data.target.n_examples} `{data.target.task}` examples (seed "
                         f"{data.target.seed}), from the {recipe.rlvr.start_from} model")
        lines.append(f"- base model: `{recipe.model.name_or_path}`\n")
        try:
            results = collect([source.run_dir])
        except UserError:
            results = None
        if results:
            lines += ["## Evaluation\n", "Accuracy (%) [95% interval over questions] (share of well-formed answers):\n",
                      results_markdown(results)]
        for png, title in (("comparison.png", "comparison"), ("rlvr_reward.png", "RLVR reward over steps")):
            if png in files:
                lines.append(f"![{title}]({png})\n")
        lines += ["## Recipe\n", "```yaml", dump_recipe(recipe).rstrip(), "```\n"]
    return "\n".join(lines)


# ---------------------------------------------------------------- export

def _load_merged(source: Source):
    """(model, tokenizer, merge report or None) — the adapter merged and checked with lowres.train.merge."""
    from lowres.hardware import detect
    from lowres.models import resolve_model
    from lowres.train.merge import _check_adapter, _merge_and_check

    location = resolve_model(source.base_ref)
    hw = detect(source.dtype)
    try:
        if source.adapter is not None:
            _check_adapter(source.adapter)
            model, tokenizer, report = _merge_and_check(location, source.base_ref, source.adapter, hw,
                                                        source.verify_prompts, source.tolerance)
            return model, tokenizer, report, hw.dtype
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(location, dtype=hw.torch_dtype)
        return model, AutoTokenizer.from_pretrained(location), None, hw.dtype
    except Exception as e:
        from lowres.train.common import is_out_of_memory

        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(f"export: out of GPU memory holding the 16-bit model ({hw.dtype}); free the GPU, or "
                          "export on the CPU (slower): CUDA_VISIBLE_DEVICES= lowres export …") from None


def run_export(run_or_model: Path, out: Path, *, adapter: Path | None = None, chat_template: str | None = None,
               dtype: str | None = None, force: bool = False, ollama: str | None = None, gguf: bool = False,
               llama_cpp: Path | None = None, push_to_hub: str | None = None, private: bool = False) -> Path:
    """Export a run's final model (or a model folder, + adapter) to `out`. Returns `out`."""
    out = Path(out).expanduser()
    source = find_source(Path(run_or_model), adapter, chat_template)
    if dtype is not None:
        source.dtype = dtype
    _check_out(out, force, Path(run_or_model))
    converter = llama_cpp_converter(llama_cpp) if gguf else None
    if llama_cpp is not None and not gguf:
        raise UserError("--llama-cpp goes with --gguf")
    if private and not push_to_hub:
        raise UserError("--private goes with --push-to-hub REPO")
    if push_to_hub:
        check_push(push_to_hub)

    model, tokenizer, report, saved_dtype = _load_merged(source)
    unchanged = unchanged_note(source)
    if unchanged:
        console.print(f"[yellow]export: warning: {unchanged}[/yellow]", soft_wrap=True)
    if source.chat_template == "r1":
        tokenizer.chat_template = R1_CHAT_TEMPLATE
    elif not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{source.base_ref}: the tokenizer has no chat template of its own; export with "
                        "--chat-template r1")
    system = R1_SYSTEM  # every bundled task prompts with it (lowres.tasks.base.r1_messages)
    gen = model.generation_config
    eos = gen.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id

    with disk_guard(out, "export"), building_folder(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        files = []
        if source.run_dir is not None:
            for png in ("comparison.png", "rlvr_reward.png"):
                if (source.run_dir / png).is_file():
                    shutil.copy2(source.run_dir / png, tmp / png)
                    files.append(png)
        write_json(tmp / "export.json", {"source": str(run_or_model), "base_model": source.base_ref,
                                         "adapter": str(source.adapter) if source.adapter else None,
                                         "dtype": saved_dtype, "chat_template": source.chat_template,
                                         "system_prompt": system, "merge_check": report,
                                         "unchanged": unchanged})
        gguf_name = None
        if converter is not None:
            gguf_name = f"{out.name}-f16.gguf"
            _convert_gguf(converter, tmp, tmp / gguf_name)
        if ollama:
            template = ollama_template(source.chat_template, getattr(tokenizer, "chat_template", None))
            write_text(tmp / "Modelfile", modelfile_text(f"./{gguf_name}" if gguf_name else ".", template, system,
                                                         _stop_tokens(tokenizer, gen)))
        write_text(tmp / "README.md", model_card(source, report, saved_dtype, system, files))
    console.print(f"exported {source.adapter or source.base_ref} ({saved_dtype}) → {out}")
    if gguf and converter is None:
        console.print(f"GGUF: {LLAMA_CPP_HINT}", soft_wrap=True)
    if ollama:
        _ollama_create(ollama, out)
    if push_to_hub:
        _push(out, push_to_hub, private)
    return out


def _convert_gguf(script: Path, folder: Path, outfile: Path) -> None:
    cmd = [sys.executable, str(script), str(folder), "--outfile", str(outfile), "--outtype", "f16"]
    with console.status("converting to GGUF with llama.cpp"):
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"llama.cpp's converter failed ({script}): {last[0][:200]}")


def _ollama_create(name: str, out: Path) -> None:
    command = f"cd {shlex.quote(str(out))} && ollama create {shlex.quote(name)} -f Modelfile"
    if shutil.which("ollama") is None:
        console.print(f"ollama is not installed here; to add the model to Ollama, run: {command}", soft_wrap=True)
        return
    done = subprocess.run(["ollama", "create", name, "-f", "Modelfile"], cwd=out, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"ollama create {name} failed: {last[0][:200]} (the export in {out} is complete)")
    console.print(f"ollama: created {name}; try `ollama run {name}`")


def _push(out: Path, repo_id: str, private: bool) -> None:
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        url = api.upload_folder(folder_path=str(out), repo_id=repo_id, commit_message="lowres export")
    except Exception as e:  # network, auth, a bad repo id: one line; the export itself is complete
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
        raise UserError(f"--push-to-hub {repo_id}: upload failed: {first} (the export in {out} is complete)") from None
    console.print(f"uploaded → {getattr(url, 'commit_url', url)}")
