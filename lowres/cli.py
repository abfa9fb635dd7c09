"""The `lowres` command line. Commands parse arguments, call a library function, print. No training
logic lives here."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import click
from rich.table import Table

from lowres import __version__, artifacts
from lowres.artifacts import is_disk_full, output_file, output_folder
from lowres.bench import MODEL_CONFIGS
from lowres.errors import UserError
from lowres.preflight import check_recipe, require_stage
from lowres.recipe import MAX_SEED, STAGES, bundled_recipes, dump_recipe, load_recipe, resolve_recipe_path
from lowres.ui import console, error


class _UserFacingError(click.ClickException):
    """Carries a UserError out of Click: one line on stderr, its exit code (2; 3 for out of memory)."""

    def __init__(self, message: str, exit_code: int = UserError.exit_code):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        error(self.message)


class _Exit(click.ClickException):
    """Ends the command with `exit_code`, printing `message` (if any) as one line."""

    def __init__(self, message: str | None, exit_code: int):
        super().__init__(message or "")
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        if self.message:
            error(self.message)


# ctx.meta key: (stage, folder) of the training command running, so a Ctrl-C can say whether it left a checkpoint.
STAGE_FOLDER = "lowres.stage_folder"

# Set by main(): this process is the `lowres` program, where a Ctrl-C ends in one line and exit code 130.
# Called any other way (a test's CliRunner, a notebook's cli.main), the CLI lets the KeyboardInterrupt through
# to its caller, which must stop too (a test suite must not carry on after Ctrl-C).
_RUNNING_AS_PROGRAM = False


class _PassedInterrupt(BaseException):
    """Carries a KeyboardInterrupt past Click's main, which would turn it into "Aborted!" and exit code 1;
    `_Group.main` raises it again on the far side."""

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__()
        self.interrupt = interrupt


class _Group(click.Group):
    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except _PassedInterrupt as passed:
            raise passed.interrupt from None

    def invoke(self, ctx):
        from lowres.launch import INTERRUPTED, StageFailed

        try:
            return super().invoke(ctx)
        except UserError as e:
            from lowres.distributed import record_error

            if record_error(str(e), e.exit_code):  # one of several processes: the launcher prints it once
                raise _Exit(None, e.exit_code) from None
            raise _UserFacingError(str(e), e.exit_code) from None
        except OSError as e:
            # A full disk or a read-only place met outside the guarded writes: still one line.
            if is_disk_full(e):
                raise _UserFacingError(f"the disk is full writing {e.filename or 'a file'}; free some space "
                                       "and run the same command again") from None
            if e.errno in (errno.EACCES, errno.EROFS):
                raise _UserFacingError(f"cannot write {e.filename or 'a file'} ({os.strerror(e.errno)})") from None
            if e.errno == errno.ENAMETOOLONG:  # a long output.dir or --out: the run name is checked in the recipe
                raise _UserFacingError(f"{e.filename or 'a path'}: a file or folder name in it is too long for the "
                                       "file system; shorten it") from None
            raise
        except StageFailed as e:
            if e.interrupt is not None and not _RUNNING_AS_PROGRAM:
                raise _PassedInterrupt(e.interrupt) from None
            if e.exit_code == INTERRUPTED:
                from lowres.train.resume import interrupted_message

                raise _Exit(interrupted_message(e.stage, e.folder), INTERRUPTED) from None
            raise _Exit(e.message, e.exit_code) from None
        except KeyboardInterrupt as interrupt:
            if not _RUNNING_AS_PROGRAM:
                raise _PassedInterrupt(interrupt) from None
            # In a stage's child the conductor says how to resume; on its own, say it here, as the stage's
            # folder shows it (a training command records which in ctx.meta).
            if os.environ.get("LOWRES_STAGE_CHILD") == "1":
                raise _Exit(None, INTERRUPTED) from None
            stage, folder = ctx.meta.get(STAGE_FOLDER, (None, None))
            if stage is None:
                raise _Exit("interrupted", INTERRUPTED) from None
            from lowres.train.resume import interrupted_message

            raise _Exit(interrupted_message(stage, folder), INTERRUPTED) from None


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set rlvr.learning_rate=1e-6 (repeatable).")


# Commands that train: Unsloth (when it is the backend) must be imported before transformers, peft,
# datasets and trl, so they quiet those libraries only after `_training_start` (see there).
TRAINING_COMMANDS = {"warmup", "rlvr"}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lowres")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """lowres: warm up a small LLM on Knights & Knaves reasoning traces, then train it with
    GRPO on ≤100 examples of your task."""
    from lowres.distributed import in_launch, is_main_process

    if in_launch():
        if ctx.invoked_subcommand not in TRAINING_COMMANDS:
            raise UserError(f"lowres {ctx.invoked_subcommand} runs as one process; only warmup and rlvr run as "
                            "several (lowres run --num-processes N launches them)")
        if not is_main_process():
            console.quiet = True  # the main process shows the stage; the others only train
    if ctx.invoked_subcommand not in TRAINING_COMMANDS:
        from lowres.ui import quiet_libraries

        quiet_libraries()


def _training_start(recipe) -> None:
    """Before a training command touches transformers: import unsloth first where it will be the
    backend (it patches transformers/peft/trl as they load), then quiet the libraries."""
    from lowres.hardware import import_unsloth_first
    from lowres.ui import quiet_libraries

    import_unsloth_first(recipe.model.backend, recipe.num_processes)
    quiet_libraries()


processes_option = click.option(
    "--num-processes", type=click.IntRange(min=1), metavar="N",
    help="Train with N processes, one per GPU (DDP through accelerate launch; sets the recipe's num_processes). "
         "The global batch is per-device batch × accumulation steps × N.")


def _launch_if_several(recipe, stage: str, args: list[str], folder: Path) -> bool:
    """With num_processes > 1 and not yet inside a launch: run this very command as that many
    processes (accelerate launch) and return True; else False (this process trains, into `folder`)."""
    from lowres.distributed import in_launch
    from lowres.launch import run_stage

    click.get_current_context().meta[STAGE_FOLDER] = (stage, folder)
    if recipe.num_processes == 1 or in_launch():
        return False
    run_stage(stage, args, processes=recipe.num_processes, folder=folder)
    return True


def _stage_args(command: list[str], overrides: tuple[str, ...], num_processes: int | None,
                **options: object) -> list[str]:
    """The command line that repeats a training command in each process."""
    args = list(command)
    for override in overrides:
        args += ["--set", override]
    if num_processes is not None:
        args += ["--num-processes", str(num_processes)]
    for name, value in options.items():
        if value is True:
            args.append(f"--{name.replace('_', '-')}")
        elif value not in (None, False):
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


# ---------------------------------------------------------------- env

@cli.command()
def env() -> None:
    """Show the hardware, and which backend and dtype lowres would use and why."""
    from rich.markup import escape

    from lowres.hardware import detect, package_versions, unsloth_import_problem, versions_outside_tested_ranges

    hw = detect()
    table = Table(title="lowres env", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    import torch

    table.add_row("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})")
    table.add_row("device", hw.device)
    if hw.gpu_name:
        table.add_row("GPU", f"{hw.gpu_name}, {hw.vram_gb:.1f} GiB")
    table.add_row("bf16 supported", "yes" if hw.bf16_supported else "no")
    # Installed is not usable: Unsloth is tried in a child process (importing it here would patch this one).
    problem = unsloth_import_problem() if hw.backend == "unsloth" else None
    if problem:
        table.add_row("backend", f"[red]unsloth does not import: {escape(problem)}[/red]\ntraining stops with this "
                      "error; repair it with pip install 'lowres[gpu]', or set model.backend: transformers")
        hw.reasons[0] = "backend unsloth: CUDA GPU and unsloth installed, but it does not import"
    else:
        table.add_row("backend", hw.backend + (" (imports)" if hw.backend == "unsloth" else ""))
    table.add_row("dtype", hw.dtype)
    from lowres.hardware import resolve_load_in_4bit

    four_bit, why = resolve_load_in_4bit("auto", hw.device)
    table.add_row("warmup base", f"{'4-bit (QLoRA)' if four_bit else '16-bit'} where warmup.load_in_4bit is auto "
                  "(the default)")
    table.add_row("why", "\n".join([*hw.reasons, f"warmup.load_in_4bit {why}"]))
    from lowres.hardware import MULTI_PROCESS_BACKEND

    gpus = torch.cuda.device_count()
    table.add_row("several processes", f"--num-processes N (up to {gpus}, one per GPU): {MULTI_PROCESS_BACKEND}"
                  if gpus else f"--num-processes N splits the CPU cores; {MULTI_PROCESS_BACKEND}")
    versions = package_versions()
    outside = versions_outside_tested_ranges(versions)
    for name, version in versions.items():
        if name == "torch":
            continue  # shown above with its CUDA version
        shown = version or "[dim]not installed[/dim]"
        if name in outside:
            shown += f" [yellow](tested: {outside[name][1]})[/yellow]"
        table.add_row(name, shown)
    console.print(table)
    if outside:
        pins = " ".join(f"'{name}{spec}'" for name, (_, spec) in outside.items())
        console.print(f"[yellow]outside the tested versions: {', '.join(f'{n} {v}' for n, (v, _) in outside.items())}"
                      f"; to match them: pip install {pins}[/yellow]")


# ---------------------------------------------------------------- recipes

@cli.group(cls=_Group)
def recipes() -> None:
    """List, show and copy the bundled recipes."""


@recipes.command("list")
def recipes_list() -> None:
    """Name, description, model and stages of each bundled recipe."""
    from rich.padding import Padding
    from rich.text import Text

    rows = []
    for name, path in bundled_recipes().items():
        recipe = load_recipe(path)
        rows.append((name, recipe.description, recipe.model.name_or_path, " → ".join(recipe.stages)))
    # A name is what you copy into `lowres run NAME`, so it is never wrapped, folded or cut: the other
    # columns wrap instead. Where four columns do not fit, model and stages go under the description;
    # where even two do not, each recipe is a name line followed by its details.
    name_width = max(len(name) for name, *_ in rows)
    model_width = max(len(model) for _, _, model, _ in rows)
    title = "bundled recipes"
    # Borders and padding take 13 columns in four columns, 7 in two; a description needs about 24 to read.
    if console.width >= name_width + model_width + 13 + 24 + len("warmup → merge"):
        table = Table(title=title, title_justify="left")
        table.add_column("name", no_wrap=True, min_width=name_width)
        table.add_column("description", overflow="fold")
        table.add_column("model", no_wrap=True)
        table.add_column("stages", overflow="fold")
        for name, description, model, stages in rows:
            table.add_row(name, Text(description), Text(model), Text(stages))
        console.print(table)
    elif console.width >= name_width + 7 + 16:
        table = Table(title=title, title_justify="left")
        table.add_column("name", no_wrap=True, min_width=name_width)
        table.add_column("description", overflow="fold")
        for name, description, model, stages in rows:
            details = Text(description)
            details.append(f"\n{model} · {stages}", style="dim")
            table.add_row(name, details)
        console.print(table)
    else:
        console.print(title, style="italic")
        for name, description, model, stages in rows:
            console.print(Text(name, style="bold"), soft_wrap=True)
            console.print(Padding(Text(f"{description}\n{model} · {stages}", overflow="fold"), (0, 0, 0, 2)))


@recipes.command("show")
@click.argument("name")
@click.option("--resolved", is_flag=True, help="Print every field, defaults filled in.")
def recipes_show(name: str, resolved: bool) -> None:
    """Print a bundled recipe (or a recipe file)."""
    path = resolve_recipe_path(name)
    if resolved:
        click.echo(dump_recipe(load_recipe(path)), nl=False)
    else:
        load_recipe(path)  # fail loudly on a broken file rather than print it
        click.echo(path.read_text(encoding="utf-8"), nl=False)


@recipes.command("cp")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def recipes_cp(name: str, dest: Path, force: bool) -> None:
    """Copy a bundled recipe to DEST (a file or a folder) to edit it."""
    src = resolve_recipe_path(name)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; pass --force to overwrite it")
    output_file(dest, "recipe copy")
    shutil.copyfile(src, dest)
    console.print(f"copied {src.name} → {dest}")
    if dest.stem != src.stem:
        # The copy keeps `name:`, so its runs would land in (and reuse) the original's folder.
        console.print(f"[yellow]note: the copy still says `name: {load_recipe(src).name}`, so its runs go to "
                      f"runs/{load_recipe(src).name}; change `name:` to keep them apart[/yellow]")


# ---------------------------------------------------------------- validate

@cli.command()
@click.argument("recipe_files", nargs=-1, required=True, metavar="RECIPE...")
@set_option
def validate(recipe_files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check recipe files; exit 2 with a message naming the first problem in each bad one."""
    failed = 0
    for name in recipe_files:
        try:
            recipe = load_recipe(resolve_recipe_path(name), list(overrides))
            check_recipe(recipe)
        except UserError as e:
            error(str(e))
            failed += 1
            continue
        console.print(f"[green]ok[/green] {name} ({recipe.name}: {' → '.join(recipe.stages)})")
    if failed:
        raise click.exceptions.Exit(2)


# ---------------------------------------------------------------- Knights & Knaves

def _people(text: str) -> list[int]:
    """'3' -> [3]; '3-7' -> [3, 4, 5, 6, 7]; '2,4' -> [2, 4]."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            if lo > hi:
                raise UserError(f"--people {text!r}: the range is reversed; write the smaller size first: "
                                f"--people {hi}-{lo}")
            sizes = list(range(lo, hi + 1))
        else:
            sizes = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--people {text!r}: use a size (3), a range (3-7) or a list (2,4)") from None
    if not sizes or any(not 2 <= n <= 8 for n in sizes):
        raise UserError(f"--people {text!r}: puzzles have 2 to 8 people")
    return sizes


def _rows_out(out: Path) -> Path:
    """Check an --out for rows before the work: a .jsonl or .parquet file that can be written."""
    if out.suffix not in (".jsonl", ".parquet"):
        raise UserError(f"--out {out}: write .jsonl or .parquet")
    return output_file(out)


def _write_rows(rows: list[dict], out: Path) -> None:
    """Write rows atomically (a crash leaves the old file or none, never half of one)."""
    from lowres import artifacts

    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        partial = out.with_name(f".{out.name}.partial")
        pq.write_table(pa.Table.from_pylist(rows), partial)
        os.replace(partial, out)
    else:
        artifacts.write_jsonl(out, rows)


people_option = click.option("--people", default="3-7", show_default=True, help="Sizes: 3, 3-7 or 2,4.")


@cli.group(cls=_Group)
def kk() -> None:
    """Knights & Knaves puzzles: generate, solver-written traces, show, import Logic-RL."""


@kk.command("generate")
@click.option("-n", "count", type=click.IntRange(min=1), default=1000, show_default=True)
@people_option
@click.option("--depth", type=click.IntRange(0, 4), default=1, show_default=True,
              help="Nesting of and/or/if/iff in statements (1: Logic-RL's shapes).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help=".jsonl or .parquet")
def kk_generate(count: int, people: str, depth: int, seed: int, out: Path) -> None:
    """Generate uniquely solvable puzzles (rows: id, names, statements, solution, quiz, answer)."""
    from lowres.tasks.kk import generate_puzzles
    from lowres.tasks.kk.task import puzzle_row

    _rows_out(out)
    rows = [puzzle_row(p) for p in generate_puzzles(count, n_people=_people(people), seed=seed, depth=depth)]
    _write_rows(rows, out)
    console.print(f"wrote {len(rows)} puzzles → {out}")


@kk.command("traces")
@click.option("-n", "count", type=click.IntRange(min=1), default=1000, show_default=True)
@people_option
@click.option("--depth", type=click.IntRange(0, 4), default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help=".jsonl or .parquet")
def kk_traces(count: int, people: str, depth: int, seed: int, out: Path) -> None:
    """The offline warmup set: puzzles with solver-written long chains of thought
    (rows: prompt, completion, puzzle_id, answer, n_people)."""
    from lowres.tasks.kk.task import solver_trace_rows

    _rows_out(out)
    rows = solver_trace_rows(count, _people(people), seed=seed, depth=depth)
    _write_rows(rows, out)
    mean_chars = sum(len(r["completion"]) for r in rows) / len(rows)
    console.print(f"wrote {len(rows)} traces (mean {mean_chars:.0f} characters) → {out}")


@kk.command("show")
@click.option("--people", "n_people", type=click.IntRange(2, 8), default=3, show_default=True)
@click.option("--depth", type=click.IntRange(0, 4), default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--from", "source", type=click.Path(path_type=Path), help="Show a puzzle from this file instead.")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Row of --from.")
def kk_show(n_people: int, depth: int, seed: int, source: Path | None, index: int) -> None:
    """Pretty-print a puzzle, its solution and a solver-written trace."""
    from rich.panel import Panel

    from lowres.tasks.kk import generate_puzzle, load_logic_rl, render_quiz, render_solution, write_trace
    from lowres.tasks.kk.render import render_statement

    if source is not None:
        puzzles = load_logic_rl(source, split=None)
        if index >= len(puzzles):
            raise UserError(f"--index {index}: {source} has {len(puzzles)} puzzles")
        puzzle = puzzles[index]
    else:
        puzzle = generate_puzzle(n_people, seed, depth)
    console.print(Panel(puzzle.quiz or render_quiz(puzzle, rng=puzzle.id), title=f"puzzle {puzzle.id}"))
    for name, statement in zip(puzzle.names, puzzle.statements, strict=True):
        console.print(f"  {name}: {render_statement(statement, puzzle.names)}   [dim]{statement}[/dim]")
    console.print(Panel(render_solution(puzzle), title="solution"))
    console.print(Panel(write_trace(puzzle, seed), title="solver-written trace"))


@kk.command("import-logic-rl")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="train", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help=".jsonl or .parquet")
def kk_import_logic_rl(path: Path, split: str, out: Path) -> None:
    """Read Logic-RL's K&K parquet files (a file, or a folder of <N>ppl/<split>.parquet) into lowres rows."""
    from lowres.tasks.kk import load_logic_rl
    from lowres.tasks.kk.task import puzzle_row

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    _rows_out(out)
    rows = [puzzle_row(p) for p in load_logic_rl(path, split=None if split == "all" else split)]
    _write_rows(rows, out)
    console.print(f"imported {len(rows)} puzzles → {out}")


@cli.command()
@click.option("--teacher", "teacher_ref", help="Local teacher: hub id, folder or embedded:NAME.")
@click.option("--api-base", help="OpenAI-compatible endpoint instead, e.g. http://localhost:8000/v1.")
@click.option("--model", "api_model", help="Model name at --api-base.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Key for --api-base (or $OPENAI_API_KEY).")
@click.option("--engine", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="How to run a local --teacher.")
@click.option("--puzzles", type=click.Path(path_type=Path), help="Puzzles (kk generate / import-logic-rl output).")
@click.option("-n", "count", type=click.IntRange(min=1), default=100, show_default=True,
              help="Puzzles to generate when --puzzles is not given.")
@people_option
@click.option("--seed", default=0, show_default=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=4, show_default=True, help="Traces per puzzle.")
@click.option("--temperature", type=float, default=0.6, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--keep", type=click.Choice(["all", "correct", "formatted"]), default="all", show_default=True,
              help="all: every trace (the paper); correct: rejection sampling; formatted: well-formed ones.")
@click.option("--max-trace-tokens", type=click.IntRange(min=1), help="Drop traces longer than this.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="JSONL; rerun to resume.")
def distill(teacher_ref, api_base, api_model, api_key, engine, puzzles, count, people, seed, k, temperature, top_p,
            top_k, max_tokens, keep, max_trace_tokens, batch_size, out) -> None:
    """Sample long chain-of-thought K&K traces from a teacher model for the warmup stage."""
    from lowres import distill as d
    from lowres.tasks import get_task
    from lowres.tasks.kk import generate_puzzles
    from lowres.tasks.kk.task import puzzle_row

    if bool(teacher_ref) == bool(api_base):
        raise UserError("give either --teacher MODEL or --api-base URL --model NAME")
    if api_base and not api_model:
        raise UserError("--api-base needs --model NAME (the model's name at that endpoint)")
    output_file(out, "traces file")
    if puzzles is not None:
        if not puzzles.exists():
            raise UserError(f"--puzzles {puzzles}: no such file")
        rows = d.load_puzzle_rows(puzzles)
    else:
        rows = [puzzle_row(p) for p in generate_puzzles(count, n_people=_people(people), seed=seed)]
    if api_base:
        teacher = d.OpenAITeacher(api_base, api_model, api_key)
    elif engine == "vllm":
        teacher = d.VLLMTeacher(teacher_ref)
    else:
        teacher = d.HFTeacher(teacher_ref, batch_size=batch_size)
    settings = d.SamplingSettings(k=k, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens)
    stats = d.distill(rows, get_task("kk"), teacher, out, settings=settings, keep=keep,
                      max_trace_tokens=max_trace_tokens, batch_size=batch_size)
    console.print(f"{d.stats_line(stats)} → {out}")


# ---------------------------------------------------------------- training stages

def _recipe(recipe_file: str, overrides: tuple[str, ...], num_processes: int | None = None,
            stage: str | None = None, force: bool = False):
    """Load, validate and check a recipe (lowres.preflight) before any work. num_processes: the
    --num-processes option (the recipe's num_processes otherwise). Inside a launch started by hand
    (`accelerate launch -m lowres warmup …`) the launch's process count is the recipe's.
    stage: the stage a stage command runs, refused unless the recipe lists it or `force` is given."""
    from lowres.distributed import in_launch, process_count

    extra = [f"num_processes={num_processes}"] if num_processes is not None else []
    try:
        recipe = load_recipe(resolve_recipe_path(recipe_file), [*overrides, *extra])
    except UserError as e:  # blame the option as the user typed it
        raise UserError(str(e).replace(f"--set num_processes={num_processes}:", f"--num-processes {num_processes}:")
                        ) from None
    if in_launch() and recipe.num_processes != process_count():
        if num_processes is not None or recipe.num_processes != 1:
            raise UserError(f"launched as {process_count()} processes, but num_processes is {recipe.num_processes}; "
                            "make them agree (or drop --num-processes and let the launch decide)")
        recipe = load_recipe(resolve_recipe_path(recipe_file), [*overrides, f"num_processes={process_count()}"])
    if stage is not None and not force:
        require_stage(recipe, stage)
    check_recipe(recipe, also=(stage,) if stage else ())
    return recipe


@cli.command()
@click.argument("recipe_file", metavar="RECIPE")
@set_option
@click.option("--out", type=click.Path(path_type=Path), help="Stage folder (default runs/<name>/warmup).")
@processes_option
@click.option("--force", is_flag=True, help="Train even when the recipe's stages do not list warmup (with its "
                                            "warmup: settings, or their defaults).")
def warmup(recipe_file: str, overrides: tuple[str, ...], out: Path | None, num_processes: int | None,
           force: bool) -> None:
    """Stage 1: (Q)LoRA SFT on long chain-of-thought traces. Rerun to resume after an interruption."""
    from lowres.runlock import run_folder_lock, stage_run_folder

    recipe = _recipe(recipe_file, overrides, num_processes, stage="warmup", force=force)
    with run_folder_lock(stage_run_folder(out or recipe.run_dir / "warmup", recipe.run_dir)):
        if _launch_if_several(recipe, "warmup", _stage_args(["warmup", recipe_file], overrides, num_processes,
                                                            out=out, force=force), out or recipe.run_dir / "warmup"):
            return
        _training_start(recipe)
        from lowres.train.warmup import run_warmup

        run_warmup(recipe, out)


@cli.command()
@click.option("--base", "base_ref", required=True, help="Base model: hub id, folder or embedded:NAME.")
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="LoRA adapter folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the merged model.")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--tolerance", type=float, default=1e-2, show_default=True,
              help="Largest allowed relative logit difference between merged and base+adapter (in fp32; "
                   "16-bit merges get their dtype's rounding floor on top).")
@click.option("--verify-prompts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Prompts on which the merged and base+adapter logits are compared.")
def merge(base_ref: str, adapter: Path, out: Path, dtype: str, tolerance: float, verify_prompts: int) -> None:
    """Merge a LoRA adapter into the 16-bit base model, and check the result."""
    from lowres.train.merge import run_merge

    run_merge(base_ref, adapter, out, dtype=dtype, tolerance=tolerance, verify_prompts=verify_prompts)


@cli.command()
@click.argument("run_or_model", type=click.Path(path_type=Path), metavar="RUN_OR_MODEL")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the exported model.")
@click.option("--adapter", type=click.Path(path_type=Path), help="With a model folder: a LoRA adapter to merge in.")
@click.option("--chat-template", type=click.Choice(["model", "r1"]),
              help="Prompt format to save (default: the run's model.chat_template; model for a model folder).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Merge and save in this dtype (default: the run's model.dtype; auto: fp32 on a CPU).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--ollama", "ollama_name", metavar="NAME", help="Write a Modelfile and run `ollama create NAME`.")
@click.option("--gguf", is_flag=True, help="Also write a GGUF file with llama.cpp's converter (see --llama-cpp).")
@click.option("--llama-cpp", type=click.Path(path_type=Path), help="A llama.cpp checkout (has convert_hf_to_gguf.py).")
@click.option("--push-to-hub", "repo_id", metavar="REPO", help="Upload the folder to this Hugging Face Hub repo.")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo private.")
def export(run_or_model: Path, out: Path, adapter: Path | None, chat_template: str | None, dtype: str | None,
           force: bool, ollama_name: str | None, gguf: bool, llama_cpp: Path | None, repo_id: str | None,
           private: bool) -> None:
    """Export a run's final model (or a model folder + adapter): merged weights, tokenizer, chat template, card."""
    from lowres.export import run_export

    run_export(run_or_model, out, adapter=adapter, chat_template=chat_template, dtype=dtype, force=force,
               ollama=ollama_name, gguf=gguf, llama_cpp=llama_cpp, push_to_hub=repo_id, private=private)


@cli.command()
@click.argument("recipe_file", metavar="RECIPE")
@set_option
@click.option("--model", "model_ref", help="Start model (default: runs/<name>/merge, or the base "
                                           "with rlvr.start_from: base).")
@click.option("--no-warmup", "no_warmup", is_flag=True,
              help="The no-warmup baseline: the same GRPO from the base model, into runs/<name>/rlvr-no-warmup.")
@click.option("--random-reward", "random_reward", is_flag=True,
              help="The spurious-reward control: the same GRPO, rewarded by a seeded coin flip that ignores the "
                   "answer, into runs/<name>/rlvr-random-reward.")
@click.option("--seed", "arm_seed", type=click.IntRange(0, MAX_SEED),
              help="This run's GRPO seed (LoRA initialisation, sampling); default: the recipe's seed.")
@click.option("--timing-reward", "timing_reward", is_flag=True, hidden=True,
              help="lowres bench's stand-in reward: differs between every two completions, so every row trains.")
@click.option("--out", type=click.Path(path_type=Path), help="Stage folder (default runs/<name>/rlvr).")
@processes_option
@click.option("--force", is_flag=True, help="Train even when the recipe's stages do not list rlvr (with its rlvr: "
                                            "and data.target: settings, or their defaults).")
def rlvr(recipe_file: str, overrides: tuple[str, ...], model_ref: str | None, no_warmup: bool, random_reward: bool,
         arm_seed: int | None, timing_reward: bool, out: Path | None, num_processes: int | None,
         force: bool) -> None:
    """Stage 2: LoRA GRPO with the target task's verifiable reward on ≤100 examples."""
    if no_warmup and model_ref:
        raise UserError("--no-warmup starts from the recipe's base model; drop --model")
    if no_warmup and random_reward:
        raise UserError("--random-reward is the control for rlvr's own start model; drop --no-warmup")
    from lowres.runlock import run_folder_lock, stage_run_folder

    stage = "rlvr-no-warmup" if no_warmup else "rlvr-random-reward" if random_reward else "rlvr"
    recipe = _recipe(recipe_file, overrides, num_processes, stage=stage, force=force)
    args = _stage_args(["rlvr", recipe_file], overrides, num_processes, model=model_ref, no_warmup=no_warmup,
                       random_reward=random_reward, seed=arm_seed, timing_reward=timing_reward, out=out,
                       force=force)
    with run_folder_lock(stage_run_folder(out or recipe.run_dir / stage, recipe.run_dir)):
        if _launch_if_several(recipe, stage, args, out or recipe.run_dir / stage):
            return
        _training_start(recipe)
        from lowres.train.rlvr import run_rlvr

        run_rlvr(recipe, model_ref, out, stage=stage, seed=arm_seed, timing_reward=timing_reward)


@cli.command()
@click.argument("recipe_file", metavar="RECIPE")
@set_option
@click.option("--stage", type=click.Choice(["rlvr", "rlvr-no-warmup"]), default="rlvr", show_default=True,
              help="The RLVR arm whose start model is checked (rlvr-no-warmup: the base model).")
@click.option("--model", "model_ref", help="Check this start model instead (default: runs/<name>/merge, or the base).")
@click.option("--samples-only", "samples_to", type=click.Path(path_type=Path), hidden=True,
              help="Only sample and grade, into this file (what an RLVR stage on Unsloth asks of a child).")
def check(recipe_file: str, overrides: tuple[str, ...], stage: str, model_ref: str | None,
          samples_to: Path | None) -> None:
    """Will GRPO learn? Sample the start model on the training prompts: truncation, groups without a reward
    difference, pass rates, a GRPO step's sampling time, and each problem's fix (rlvr.signal_check)."""
    from lowres.train.check import candidate_rows, prepare_rows, rows_to_sample, start_model, start_model_samples

    recipe = _recipe(recipe_file, overrides)
    if "rlvr" not in recipe.stages and samples_to is None:
        # Else the check would sample with the default rlvr: and data.target: settings, sized for a GPU.
        raise UserError(f"{recipe.source}: stages: rlvr is not one of this recipe's stages "
                        f"({', '.join(recipe.stages)}), so there is no GRPO run to check; add rlvr to stages with "
                        "the rlvr: and data.target: settings you want")
    if samples_to is not None:
        ref, made_by = start_model(recipe, stage, model_ref)
        start_model_samples(recipe, stage, ref, made_by, rows_to_sample(recipe, candidate_rows(recipe)),
                            cache_to=samples_to)
        return
    if recipe.rlvr.signal_check == "off":
        recipe = load_recipe(resolve_recipe_path(recipe_file), [*overrides, "rlvr.signal_check=warn"])
    from lowres.runlock import run_folder_lock

    with run_folder_lock(recipe.run_dir):  # it writes into the run folder: not while a run is writing there
        out = output_folder(recipe.run_dir / stage, f"{stage} folder")
        prepare_rows(recipe, stage, out, model_ref)


# ---------------------------------------------------------------- eval and compare

@cli.command("eval")
@click.argument("model_ref", metavar="MODEL")
@click.option("--adapter", type=click.Path(path_type=Path), help="A LoRA adapter to apply to MODEL.")
@click.option("--tasks", default="kk", show_default=True, help="Comma-separated: kk,gsm8k,math,mmlu_pro,…")
@click.option("--n-samples", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--limit", "limit_text", metavar="N|TASK=N,…",
              help="Questions per task (a seeded sample): N for every task, or per task, e.g. math=500,kk=100.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--chat-template", type=click.Choice(["model", "r1"]), default="model", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seeds the questions picked under --limit, and the "
                                                           "sampling unless --sample-seed is given.")
@click.option("--sample-seed", type=int, help="Seeds the sampling alone (the questions stay --seed's).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--sample-dtype", type=click.Choice(["auto", "model", "bf16"]), default="auto", show_default=True,
              help="Sample from a copy of the weights in this dtype; auto: bf16 for an fp32 model on a CPU that "
                   "multiplies bf16 natively (about 1.7x faster there), else the model's.")
@click.option("--label", help="Name for the model in tables (default: the model folder's name).")
@click.option("--table/--no-table", default=True, hidden=True, help="Print the results table (lowres run prints one "
                                                                   "for all its models instead).")
@click.option("--out", type=click.Path(path_type=Path), help="Results folder (default runs/eval/<model>).")
@click.option("--plugin", "plugins", multiple=True, metavar="FILE.py|MODULE",
              help="A Python file or module that registers your own tasks (repeatable), as a recipe's plugins:.")
@click.option("--task-spec", "task_specs", multiple=True, metavar="FILE.yaml",
              help="A YAML file whose top-level tasks: mapping defines tasks without Python (a recipe file is one; "
                   "repeatable); --tasks can then name them.")
def eval_command(model_ref, adapter, tasks, n_samples, temperature, top_p, max_new_tokens, limit_text, batch_size,
                 chat_template, seed, sample_seed, dtype, sample_dtype, label, table, out, plugins,
                 task_specs) -> None:
    """Evaluate a model (hub id, folder, merged checkpoint, or base + --adapter) on tasks: mean accuracy
    ± std over samples, pass@k, format errors, completion length; per-sample JSONL."""
    from lowres.tasks.plugins import load_plugins

    load_plugins(list(plugins))
    from lowres.recipe import load_task_specs

    for spec_file in task_specs:
        load_task_specs(spec_file)
    from lowres.evaluate import GenerationSettings, evaluate_model
    from lowres.report import results_table

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    limit = _parse_limit(limit_text, names)
    settings = GenerationSettings(n_samples=n_samples, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  chat_template=chat_template, seed=seed, sample_seed=sample_seed,
                                  sample_dtype=sample_dtype)
    default_label = Path(model_ref).name or model_ref
    out = out or Path("runs") / "eval" / (default_label.replace(":", "-") + (f"+{adapter.name}" if adapter else ""))
    output_folder(out, "results folder")
    label = label or default_label
    from lowres.runlock import run_folder_lock, stage_run_folder

    with run_folder_lock(stage_run_folder(out)):
        results = evaluate_model(model_ref, names, settings, adapter=adapter, limit=limit, out_dir=out, label=label,
                                 dtype=dtype)
    if table:
        console.print(results_table({label: results}))
    console.print(f"results → {out}")


def _parse_limit(text: str | None, tasks: list[str]) -> int | dict[str, int] | None:
    """--limit 50 → 50; --limit math=500,kk=100 → {"math": 500, "kk": 100}."""
    if text is None:
        return None
    try:
        if "=" not in text:
            limit: int | dict[str, int] = int(text)
            values = [limit]
        else:
            limit = {k.strip(): int(v) for k, v in (part.split("=", 1) for part in text.split(",") if part.strip())}
            values = list(limit.values())
    except ValueError:
        raise UserError(f"--limit {text}: expected a number, or TASK=N pairs such as math=500,kk=100") from None
    if any(v < 1 for v in values):
        raise UserError(f"--limit {text}: question counts must be at least 1")
    unknown = sorted(set(limit) - set(tasks)) if isinstance(limit, dict) else []
    if unknown:
        raise UserError(f"--limit {text}: {unknown[0]!r} is not one of --tasks ({', '.join(tasks)})")
    return limit


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN...")

@click.option("--plot", type=click.Path(path_type=Path), default=Path("comparison.png"), show_default=True,
              help="Where to write the bar chart.")
def compare(runs: tuple[Path, ...], plot: Path) -> None:
    """Side-by-side accuracy of `lowres eval` outputs and/or `lowres run` folders, with a PNG chart; and each
    RUN after the first paired with the first on the questions both answered: the difference of their final
    models (a run's rlvr arm, else its warmup), its 95% interval, p-value and verdict."""
    from lowres.evidence import compare_models, method_note
    from lowres.report import (
        collect,
        different_questions_notes,
        final_models,
        plot_comparison,
        results_table,
        sample_files,
        source_labels,
    )

    output_file(plot, "chart")
    results = collect(list(runs))
    files = sample_files(list(runs))
    per_source = [{r.task for label in source_labels(run, list(results)) for r in results[label]} for run in runs]
    if len(runs) > 1 and not set.intersection(*per_source):
        raise UserError("these results share no task (" + "; ".join(
            f"{run}: {', '.join(sorted(t)) or 'none'}" for run, t in zip(runs, per_source, strict=True))
            + "): evaluate them on the same task")
    console.print(results_table(results))
    for note in different_questions_notes(files):
        console.print(f"[yellow]note: {note}[/yellow]")
    pairs = []
    first = final_models(runs[0], list(results))
    for other in runs[1:]:
        second = final_models(other, list(results))
        if first and second and first != second:
            pairs.append((first, second))
    comparisons = compare_models(pairs, files)
    for c in comparisons:
        console.print(c.line().replace("**", ""), markup=False)
    if comparisons:
        console.print(method_note(comparisons))
    console.print(f"chart → {plot_comparison(results, plot)}")


# ---------------------------------------------------------------- chat

@cli.command()
@click.argument("target", metavar="MODEL_OR_RUN")
@click.option("--adapter", type=click.Path(path_type=Path), help="A LoRA adapter folder on top of MODEL.")
@click.option("--system", help="The system prompt (default: the tasks' R1 format: <think> then <answer>).")
@click.option("--no-system", is_flag=True, help="No system prompt.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.7, show_default=True,
              help="0: greedy.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
def chat(target, adapter, system, no_system, max_new_tokens, temperature, seed) -> None:
    """Talk to a model: a run folder's final model (runs/demo) or any model reference, answers streamed.
    Type /reset to start a new conversation, /quit (or Ctrl-D) to leave. A prompt piped on standard input
    gets one answer: echo "What is 2 + 3?" | lowres chat embedded:smollm2-135m"""
    import sys

    from lowres.chat import QUIT, RESET, Chat, resolve_chat_model
    from lowres.tasks.base import R1_SYSTEM

    chosen = resolve_chat_model(target, adapter)
    piped = None if sys.stdin.isatty() else sys.stdin.read().strip()  # piped: one prompt, one answer, for scripts
    if piped == "":
        raise UserError(f"nothing on standard input: pipe a prompt in, e.g. echo \"What is 2 + 3?\" | lowres chat "
                        f"{target}")
    session = Chat(chosen, None if no_system else (system or R1_SYSTEM), max_new_tokens, temperature, seed)

    def write(text: str) -> None:
        click.echo(text, nl=False)

    if piped is not None:
        session.answer(piped, write)
        click.echo()
        return
    console.print(f"chatting with {chosen.described}; {RESET} starts over, {QUIT} or Ctrl-D leaves")
    while True:
        try:
            question = click.prompt("you", prompt_suffix="> ").strip()
        except (EOFError, click.exceptions.Abort):
            click.echo()
            return
        if question == QUIT:
            return
        if question == RESET:
            session.reset()
            console.print("(a new conversation)")
            continue
        session.answer(question, write)
        click.echo()


# ---------------------------------------------------------------- run

@cli.command()
@click.argument("recipe_file", required=False, metavar="[RECIPE]")
@set_option
@click.option("--dry-run", is_flag=True, help="Print the plan and the resolved recipe; load nothing.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --dry-run: also write the plan (every step, its fingerprint, status and why, what it reads "
                   "and writes, its time estimate) here as JSON.")
@click.option("--force", "force", multiple=True, type=click.Choice(list(STAGES)),
              metavar="STAGE", help="Run STAGE again even if it is done, and every stage that depends on it "
                                    "(repeatable).")
@processes_option
def run(recipe_file: str | None, overrides: tuple[str, ...], dry_run: bool, json_path: Path | None,
        force: tuple[str, ...], num_processes: int | None) -> None:
    """Run a recipe's stages in order. With no RECIPE: the offline demo on the embedded model."""
    from lowres.pipeline import DEFAULT_RECIPE, make_plan, rerun_set, run_recipe

    recipe = _recipe(recipe_file or DEFAULT_RECIPE, overrides, num_processes)
    rerun_set(recipe, force)  # an unknown --force stage fails here, before anything runs
    if json_path and not dry_run:
        raise click.UsageError("--json writes the plan of a --dry-run; add --dry-run")
    if dry_run:
        import json

        from lowres.estimate import describe

        plan = make_plan(recipe, force)
        console.print(plan.table())
        for line in (*plan.time_lines, *describe(recipe)):
            console.print(line)
        if json_path:
            artifacts.write_text(json_path, json.dumps(plan.to_dict(), indent=2) + "\n")
        click.echo(dump_recipe(recipe), nl=False)
        return
    from lowres.runlock import run_folder_lock

    with run_folder_lock(recipe.run_dir):
        run_recipe(recipe, force)  # plans under the lock (no other run changes what the plan read), then executes


# ---------------------------------------------------------------- bench

@cli.command()
@click.argument("recipe_file", required=False, metavar="[RECIPE]")
@set_option
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed optimizer steps per training stage (after one untimed step).")
@click.option("--stages", help="Comma-separated subset of the recipe's stages (default: all of them).")
@click.option("--backend", type=click.Choice(["auto", "unsloth", "transformers", "both"]), default="auto",
              show_default=True, help="both: Unsloth and transformers+PEFT side by side, with the ratios.")
@click.option("--model-config", type=click.Choice(list(MODEL_CONFIGS)),
              help="Measure on a randomly initialised model of this shape instead of the recipe's model "
                   "(nothing downloaded).")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Also write the figures here; at runs/<name>/bench.json `lowres run` uses them for its time "
                   "estimate.")
@click.option("--gpu-memory", type=click.FloatRange(min=0, min_open=True), metavar="GIB",
              help="Cap each stage's GPU memory at GIB, as on a card that size: a stage that needs more fails as "
                   "not fitting (sets LOWRES_GPU_MEMORY_GIB, which every lowres command honours).")
def bench(recipe_file, overrides, steps, stages, backend, model_config, json_path, gpu_memory) -> None:
    """Measure a recipe on this machine: a few real steps of each stage, per backend — step time,
    tokens/s, peak memory, whether it fits, and the whole recipe's estimated wall time."""
    import json

    from lowres import bench as b
    from lowres.hardware import MEMORY_CAP
    from lowres.pipeline import DEFAULT_RECIPE

    if gpu_memory is not None:  # every stage process applies it (lowres.hardware.detect), as on a card that size
        os.environ[MEMORY_CAP] = f"{gpu_memory:g}"
    if model_config:  # before the recipe is checked: its own model need not be downloaded
        overrides = (*overrides, f"model.name_or_path={b.random_model(model_config)}")
    recipe = _recipe(recipe_file or DEFAULT_RECIPE, overrides)
    if json_path is not None:
        output_file(json_path, "figures file")
    chosen = [s.strip() for s in stages.split(",") if s.strip()] if stages else None

    def keep(report: dict) -> None:  # after every stage: a bench cut short keeps what it measured
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=2))

    report = b.bench(recipe, steps=steps, stages=chosen, backend=backend, model_config=model_config, on_report=keep)
    console.print(b.report_table(report))
    for line in b.summary_lines(report):
        console.print(line)
    if json_path is not None:
        console.print(f"figures → {json_path}")
    if any(r["status"] == "crashed" for r in report["stages"]):
        raise click.exceptions.Exit(1)  # the rest's figures are shown and kept; the crash is a bug to look at



def main() -> None:
    """The `lowres` program (console script, python -m lowres)."""
    global _RUNNING_AS_PROGRAM
    _RUNNING_AS_PROGRAM = True
    cli(prog_name="lowres")


if __name__ == "__main__":
    main()
