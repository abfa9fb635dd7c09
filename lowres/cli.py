"""The `lowres` command line. Commands parse arguments, call a library function, print. No training
logic lives here."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from rich.table import Table

from lowres import __version__
from lowres.errors import UserError
from lowres.recipe import bundled_recipes, dump_recipe, load_recipe, resolve_recipe_path
from lowres.ui import console, error


class _UserFacingError(click.ClickException):
    """Carries a UserError out of Click: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        error(self.message)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise _UserFacingError(str(e)) from None


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set rlvr.learning_rate=1e-6 (repeatable).")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lowres")
def cli() -> None:
    """lowres: warm up a small LLM on Knights & Knaves reasoning traces, then train it with
    GRPO on ≤100 examples of your task."""
    from lowres.ui import quiet_libraries

    quiet_libraries()


# ---------------------------------------------------------------- env

@cli.command()
def env() -> None:
    """Show the hardware, and which backend and dtype lowres would use and why."""
    from lowres.hardware import detect, package_versions

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
    table.add_row("backend", hw.backend)
    table.add_row("dtype", hw.dtype)
    table.add_row("why", "\n".join(hw.reasons))
    for name, version in package_versions().items():
        if name == "torch":
            continue  # shown above with its CUDA version
        table.add_row(name, version or "[dim]not installed[/dim]")
    console.print(table)


# ---------------------------------------------------------------- recipes

@cli.group(cls=_Group)
def recipes() -> None:
    """List, show and copy the bundled recipes."""


@recipes.command("list")
def recipes_list() -> None:
    """Name, description, model and stages of each bundled recipe."""
    table = Table(title="bundled recipes", title_justify="left")
    for col in ("name", "description", "model", "stages"):
        table.add_column(col, overflow="fold")
    for name, path in bundled_recipes().items():
        recipe = load_recipe(path)
        table.add_row(name, recipe.description, recipe.model.name_or_path, " → ".join(recipe.stages))
    console.print(table)


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
    if not dest.parent.is_dir():
        raise UserError(f"{dest.parent} is not a folder")
    shutil.copyfile(src, dest)
    console.print(f"copied {src.name} → {dest}")


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
        except UserError as e:
            error(str(e))
            failed += 1
            continue
        console.print(f"[green]ok[/green] {name} ({recipe.name}: {' → '.join(recipe.stages)})")
    if failed:
        raise click.exceptions.Exit(2)


# ---------------------------------------------------------------- training stages

def _recipe(recipe_file: str, overrides: tuple[str, ...]):
    return load_recipe(resolve_recipe_path(recipe_file), list(overrides))


@cli.command()
@click.argument("recipe_file", metavar="RECIPE")
@set_option
@click.option("--out", type=click.Path(path_type=Path), help="Stage folder (default runs/<name>/warmup).")
def warmup(recipe_file: str, overrides: tuple[str, ...], out: Path | None) -> None:
    """Stage 1: (Q)LoRA SFT on long chain-of-thought traces. Rerun to resume after an interruption."""
    from lowres.train.warmup import run_warmup

    run_warmup(_recipe(recipe_file, overrides), out)


@cli.command()
@click.option("--base", "base_ref", required=True, help="Base model: hub id, folder or embedded:NAME.")
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="LoRA adapter folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the merged model.")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True)
@click.option("--tolerance", type=float, default=1e-2, show_default=True,
              help="Largest allowed relative logit difference between merged and base+adapter.")
def merge(base_ref: str, adapter: Path, out: Path, dtype: str, tolerance: float) -> None:
    """Merge a LoRA adapter into the 16-bit base model, and check the result."""
    from lowres.train.merge import run_merge

    run_merge(base_ref, adapter, out, dtype=dtype, tolerance=tolerance)


@cli.command()
@click.argument("recipe_file", metavar="RECIPE")
@set_option
@click.option("--model", "model_ref", help="Start model (default: runs/<name>/merge, or the base "
                                           "with rlvr.start_from: base).")
@click.option("--out", type=click.Path(path_type=Path), help="Stage folder (default runs/<name>/rlvr).")
def rlvr(recipe_file: str, overrides: tuple[str, ...], model_ref: str | None, out: Path | None) -> None:
    """Stage 2: LoRA GRPO with the target task's verifiable reward on ≤100 examples."""
    from lowres.train.rlvr import run_rlvr

    run_rlvr(_recipe(recipe_file, overrides), model_ref, out)


# ---------------------------------------------------------------- run

@cli.command()
@click.argument("recipe_file", required=False, metavar="[RECIPE]")
@set_option
@click.option("--dry-run", is_flag=True, help="Print the plan and the resolved recipe; load nothing.")
def run(recipe_file: str | None, overrides: tuple[str, ...], dry_run: bool) -> None:
    """Run a recipe's stages in order. With no RECIPE: the offline demo on the embedded model."""
    from lowres.pipeline import DEFAULT_RECIPE, plan, run_recipe

    recipe = _recipe(recipe_file or DEFAULT_RECIPE, overrides)
    if dry_run:
        console.print(plan(recipe))
        click.echo(dump_recipe(recipe), nl=False)
        return
    run_recipe(recipe)


def main() -> None:
    cli(prog_name="lowres")


if __name__ == "__main__":
    main()
