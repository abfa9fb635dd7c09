"""The manual (mkdocs.yml, docs/) builds strictly, and its reference pages are complete: every recipe key of
the dataclasses in lowres/recipe.py and every option of every command in lowres/cli.py is in the built HTML.

The pages are generated from the code at build time (docs/gen_reference.py, an MkDocs hook); this test walks
the dataclasses and the Click commands on its own, so a generator that skipped something would fail here.
The build needs the `docs` (or `dev`) extra: without MkDocs and its Material theme the build tests skip.

The design page's layer diagram is checked against the package's imports too."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import typing
from html.parser import HTMLParser
from pathlib import Path

import click
import pytest

from lowres.cli import cli
from lowres.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def recipe_key_paths() -> list[str]:
    """Every key a recipe may hold, as a dotted path (a mapping of sections: `tasks.<name>.train`)."""
    paths = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            path, tp = f"{prefix}{f.name}", hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{path}.")
                continue
            paths.append(path)
            if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                walk(typing.get_args(tp)[1], f"{path}.<name>.")

    walk(Recipe, "")
    return paths


def cli_commands() -> list[tuple[str, click.Command]]:
    """(`lowres kk generate`, command) for the root and every visible command and subcommand."""
    found = [("lowres", cli)]

    def walk(group, ctx, prefix):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            found.append((f"{prefix} {name}", command))
            if isinstance(command, click.Group):
                walk(command, click.Context(command, info_name=name, parent=ctx), f"{prefix} {name}")

    walk(cli, click.Context(cli, info_name="lowres"), "lowres")
    return found


class _Text(HTMLParser):
    """The visible text of an HTML page, entities decoded."""

    def __init__(self):
        super().__init__()
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def text_of(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts)


def table_rows(page: str) -> dict[str, list[str]]:
    """The rows of a page's tables, by their first cell's text: the cells' text."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [text_of(cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        if cells:
            rows[cells[0]] = cells
    return rows


def test_walks_find_what_they_should():
    paths = recipe_key_paths()
    assert {"name", "rlvr.learning_rate", "rlvr.lora.r", "data.warmup.trace_style", "tasks.<name>.grader"} <= set(paths)
    assert len(paths) == len(set(paths)) > 80
    names = {name for name, _ in cli_commands()}
    assert {"lowres", "lowres run", "lowres kk generate", "lowres recipes cp"} <= names


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("MkDocs and mkdocs-material are not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return out


def test_every_page_is_built(site):
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        built = site / ("index.html" if rel.name == "index" else rel / "index.html")
        assert built.is_file(), f"{page.relative_to(REPO)} was not built"


def test_recipe_reference_lists_every_key(site):
    """Each key is the first cell of a table row (exactly: rlvr.epsilon_high does not stand for rlvr.epsilon)."""
    rows = table_rows((site / "reference" / "recipe" / "index.html").read_text(encoding="utf-8"))
    missing = [path for path in recipe_key_paths() if path not in rows]
    assert not missing, f"recipe keys missing from the built recipe reference: {missing}"


def test_recipe_reference_shows_type_default_bounds_and_help(site):
    rows = table_rows((site / "reference" / "recipe" / "index.html").read_text(encoding="utf-8"))
    assert rows["rlvr.num_generations"] == ["rlvr.num_generations", "an integer", "8", "≥ 2",
                                            "completions per prompt (a GRPO group)"]
    assert rows["model.name_or_path"][1:3] == ["a string", "required"]
    assert rows["rlvr.top_p"][3] == "> 0, ≤ 1"
    assert rows["data.warmup.people"][2] == "[3, 4, 5, 6, 7]"


def test_cli_reference_lists_every_command_and_option(site):
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    sections = {m.group(1): m.start() for m in re.finditer(r'<h2 id="(cmd-[^"]+)"', page)}
    starts = sorted(sections.values()) + [len(page)]
    problems = []
    for name, command in cli_commands():
        anchor = "cmd-" + ("-".join(name.split()[1:]) or "lowres")
        if anchor not in sections:
            problems.append(f"no section for `{name}`")
            continue
        begin = sections[anchor]
        html_section = page[begin:next(s for s in starts if s > begin)]
        section = text_of(html_section)
        # The first cell of each row of the section's tables: `--top-p`, `--table, --no-table`, `--set KEY=VALUE`.
        listed = {word for first in table_rows(html_section) for word in first.replace(",", " ").split()}
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                problems += [f"`{name}` {opt}" for opt in [*param.opts, *param.secondary_opts] if opt not in listed]
            elif isinstance(param, click.Argument):
                try:
                    metavar = param.make_metavar(click.Context(command))
                except TypeError:  # click 8.1
                    metavar = param.make_metavar()
                if metavar not in listed:
                    problems.append(f"`{name}` argument {param.name}")
        first = " ".join((command.help or "").replace("`", "").split(".")[0].split())
        if first and first not in " ".join(section.split()):
            problems.append(f"`{name}` help text")
    assert not problems, "missing from the built command reference: " + "; ".join(problems)


# ---------------------------------------------------------------- the design page's layers

def design_layers() -> list[set[str]]:
    """The layer diagram on docs/design.md: one line per layer, top first, modules separated by ` · `."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    section = text[text.index("## Which way the dependencies point"):]
    block = re.search(r"```text\n(.*?)\n```", section, re.S).group(1)
    return [{name.strip().removesuffix(".py").removesuffix("/") for name in line.split("·")}
            for line in block.splitlines() if line.strip()]


def test_design_layers_match_the_imports():
    layers = design_layers()
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    package = REPO / "lowres"
    modules = {p.name.removesuffix(".py") for p in package.iterdir()
               if (p.suffix == ".py" and not p.name.startswith("__")) or (p.is_dir() and (p / "__init__.py").exists())}
    assert modules - set(level) == set(), f"modules missing from docs/design.md's layers: {modules - set(level)}"
    assert set(level) - modules == set(), f"docs/design.md names modules that do not exist: {set(level) - modules}"
    upward = []
    for source in package.rglob("*.py"):
        mine = source.relative_to(package).parts[0].removesuffix(".py")
        if mine not in level:
            continue
        tree = ast.parse(source.read_text(encoding="utf-8"))
        type_only = {id(n) for node in ast.walk(tree)
                     if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lowres":
                targets = ([node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("lowres.")]
            else:
                continue
            for target in targets:
                if target in level and target != mine and level[target] < level[mine]:
                    upward.append(f"{source.relative_to(REPO)} imports lowres.{target}")
    assert not upward, "imports that point up docs/design.md's layers: " + "; ".join(sorted(set(upward)))
