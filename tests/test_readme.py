"""The README and the manual (docs/*.md) are tested, not trusted: their YAML blocks are valid recipes,
their `lowres …` command lines parse against the real Click commands, the README stays a landing page
that links only into the repository, and the Colab notebook is valid and has no placeholders.

Nothing here runs a command: each line is parsed with `make_context` (unknown options, missing
arguments, bad choices and bad values fail) down the real group → subcommand tree, so options added
to the CLI are known here without a list to keep up to date."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from lowres.cli import cli
from lowres.recipe import RecipeError, bundled_recipes, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
NOTEBOOK = REPO / "notebooks" / "colab.ipynb"
# The README is the landing page; the manual is in docs/.
README_MAX_BYTES = 15_000

SHELL_LANGS = {"bash", "console", "sh", "shell"}
# Where a shell line stops being the `lowres` command: pipes, lists, redirections.
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "&>"}
# A YAML block without `name:` is a fragment; it is validated inside this minimal recipe.
MINIMAL_RECIPE = {"name": "readme-fragment", "model": {"name_or_path": "embedded:smollm2-135m"}}


def fenced_blocks(text: str, name: str = "README.md") -> list[tuple[str, int, str]]:
    """(language, line number of the opening fence, body) of every ``` block in a Markdown text."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if lang is None:
            if fence:
                lang, start, body = fence.group(1).lower(), number, []
        elif fence and not fence.group(1):
            blocks.append((lang, start, "\n".join(body)))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"{name}:{start}: a ``` block is never closed"
    return blocks


def command_lines(lang: str, start: int, body: str) -> list[tuple[int, str]]:
    """(line number, command) of each `lowres …` line of a shell block, continuations joined.

    In ```console blocks (transcripts) only `$ lowres …` lines are commands: the other lines are
    output, which may begin with "lowres" too (`lowres env`'s table title). In ```bash/```sh blocks
    a line that begins with `lowres ` (or `$ lowres `) is a command, and so is a `lowres …` part of
    an `a && b` list."""
    lines = body.splitlines()
    found, i = [], 0
    while i < len(lines):
        number, line = start + 1 + i, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        stripped = line.strip()
        prompted = stripped.startswith("$ ")
        if prompted:
            stripped = stripped[2:].lstrip()
        elif lang == "console":
            continue
        # `… && lowres run` (the set-up line) holds a command too.
        for part in stripped.split(" && "):
            # `CUDA_VISIBLE_DEVICES=1,2 lowres …`: environment assignments before the command
            part = re.sub(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", part.strip())
            if part == "lowres" or part.startswith("lowres "):
                found.append((number, part))
    return found


def parse_lowres(line: str) -> click.Context:
    """Parse a `lowres …` command line against the real CLI, down to its subcommand, running nothing.
    Raises click's UsageError (or subclasses) for what the shell would reject."""
    args = shlex.split(line, comments=True)
    assert args and args[0] == "lowres", line
    args = args[1:]
    for i, arg in enumerate(args):
        if arg in SHELL_OPERATORS:
            args = args[:i]
            break
    command, name, parent = cli, "lowres", None
    while True:
        ctx = command.make_context(name, list(args), parent=parent)
        if not isinstance(command, click.Group):
            return ctx
        rest = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
        if not rest:
            raise click.UsageError(f"{name} needs a subcommand", ctx)
        name, command, args = command.resolve_command(ctx, rest)
        parent = ctx


def check_parses(line: str, where: str) -> None:
    try:
        parse_lowres(line)
    except click.exceptions.Exit as e:  # --help and --version print and exit
        assert e.exit_code == 0, f"{where}: `{line}` exits {e.exit_code}"
    except click.UsageError as e:
        pytest.fail(f"{where}: `{line}` does not parse: {e.format_message()}")


def _merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Every Markdown file that is tested: the README and each page of the manual.
MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]
TEXTS = {path: path.read_text(encoding="utf-8") for path in MARKDOWN}
BLOCKS = {path: fenced_blocks(text, str(path.relative_to(REPO))) for path, text in TEXTS.items()}
# (file, line of the opening fence, body) of every ```yaml block; (file, line, command) of every command line.
YAML_BLOCKS = [(path, start, body) for path, blocks in BLOCKS.items()
               for lang, start, body in blocks if lang in ("yaml", "yml")]
COMMANDS = [(path, number, line) for path, blocks in BLOCKS.items() for lang, start, body in blocks
            if lang in SHELL_LANGS for number, line in command_lines(lang, start, body)]


def where(path: Path, number: int) -> str:
    return f"{path.relative_to(REPO)}:{number}"


def _command_names(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    names = set()
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        names.add((*prefix, name))
        if isinstance(command, click.Group):
            names |= _command_names(command, click.Context(command, info_name=name, parent=ctx), (*prefix, name))
    return names


def test_markdown_has_blocks_to_check():
    assert DOCS.is_dir() and len(MARKDOWN) > 5, "the manual (docs/*.md) is missing"
    assert YAML_BLOCKS, "no ```yaml block found in README.md or docs/"
    assert len(COMMANDS) >= 40, f"only {len(COMMANDS)} `lowres` command lines found in README.md and docs/"
    readme = [line for path, _, line in COMMANDS if path == README]
    assert len(readme) >= 8, f"only {len(readme)} `lowres` command lines in README.md"
    # Every command and subcommand is shown at work somewhere, as a command line that parses.
    shown = {tuple(shlex.split(line, comments=True)[1:3]) for _, _, line in COMMANDS}
    shown |= {words[:1] for words in shown}
    missing = _command_names(cli, click.Context(cli, info_name="lowres")) - shown
    assert not missing, f"commands never shown in README.md or docs/: {sorted(' '.join(m) for m in missing)}"


def test_readme_is_a_landing_page():
    """Short, self-contained: nothing outside the repository is linked or named, and every link is a
    file of the repository (the manual's pages)."""
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}: move detail to docs/"
    text = TEXTS[README]
    assert not re.search(r"https?://", text), "README.md links outside the repository"
    assert "../" not in text and "/work/" not in text and "ARCHITECTURE" not in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links), "README.md does not link into the manual"
    for link in links:
        target = REPO / link.split("#")[0]
        assert target.exists(), f"README.md links to {link}, which is not in the repository"


def test_readme_keeps_the_ci_test_command():
    """.ci/run reads the first ``` block after the marker as the test command (see its awk line)."""
    text = TEXTS[README]
    assert text.count("<!-- ci:test-command -->") == 1
    after = text.split("<!-- ci:test-command -->", 1)[1].lstrip("\n")
    block = re.match(r"```bash\n(.+?)\n```", after, re.S)
    assert block, "the ci:test-command marker must be followed by a ```bash block"
    command = block.group(1)
    assert command.count("\n") == 0 and "pip install" in command and command.rstrip().endswith("pytest")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "ci:test-command" in ci and "mkdocs build --strict" in ci


def test_manual_names_nothing_outside_the_repository():
    for path in MARKDOWN[1:]:
        text = TEXTS[path]
        for needle in ("../shared", "/work/", "ARCHITECTURE"):
            assert needle not in text, f"{path.relative_to(REPO)} mentions {needle}"


def plugin_source(path: Path, plugin: str, yaml_start: int) -> str | None:
    """The page's code for a plugin file a YAML block names: the last ```python block before that
    block whose following prose names the file ("Save it as `my_tasks.py`")."""
    lines = TEXTS[path].splitlines()
    found = None
    for lang, start, body in BLOCKS[path]:
        end = start + body.count("\n") + 2  # the closing fence's line number
        if lang == "python" and end < yaml_start:
            between = "\n".join(lines[end:yaml_start - 1])
            if f"`{Path(plugin).name}`" in between or f" {Path(plugin).name} " in between:
                found = body
    return found


@pytest.mark.parametrize("path,start,body", YAML_BLOCKS, ids=[where(p, s) for p, s, _ in YAML_BLOCKS])
def test_yaml_block_is_a_valid_recipe(path, start, body, tmp_path, monkeypatch):
    at = where(path, start)
    try:
        raw = yaml.safe_load(body)
    except yaml.YAMLError as e:
        pytest.fail(f"{at}: YAML syntax error: {e}")
    assert isinstance(raw, dict), f"{at}: a recipe block must be a mapping, got {type(raw).__name__}"
    whole = "name" in raw
    # Plugin files the block names are the page's own code: write them where the recipe looks
    # (the working folder), and keep the tasks they register out of the other tests.
    import lowres.tasks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lowres.tasks, "_REGISTERED", dict(lowres.tasks._REGISTERED))
    plugins = raw.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else []:
        if isinstance(plugin, str) and plugin.endswith(".py"):
            source = plugin_source(path, plugin, start)
            assert source is not None, f"{at}: plugin {plugin} is not given in a ```python block before it"
            (tmp_path / plugin).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / plugin).write_text(source, encoding="utf-8")
    try:
        recipe = recipe_from_dict(copy.deepcopy(raw) if whole else _merge(MINIMAL_RECIPE, raw), at)
    except RecipeError as e:
        pytest.fail(str(e))
    # A block named after a bundled recipe shows that recipe: it must say what the file says.
    bundled = bundled_recipes()
    if whole and recipe.name in bundled:
        shown, real = recipe.to_dict(), load_recipe(bundled[recipe.name]).to_dict()
        differ = {key: (shown[key], real[key]) for key in real if shown.get(key) != real[key]}
        assert not differ, f"{at}: disagrees with {bundled[recipe.name].name} (page, file): {differ}"


@pytest.mark.parametrize("path,number,line", COMMANDS, ids=[where(p, n) for p, n, _ in COMMANDS])
def test_command_line_parses(path, number, line):
    check_parses(line, where(path, number))


@pytest.mark.parametrize("line", [
    "lowres run --bogus-option",
    "lowres recipes nosuch",
    "lowres eval",                                # MODEL is required
    "lowres eval m --dtype fp8",                  # not a choice
    "lowres kk show --people nine",               # not an int
    "lowres merge --base b --adapter a",          # --out is required
])
def test_parser_rejects_what_click_rejects(line):
    with pytest.raises(click.UsageError):
        parse_lowres(line)


def test_command_lines_join_continuations_and_skip_output():
    body = "$ lowres eval m \\\n    --tasks kk \\\n    --limit 5\nlowres env\n$ echo hi"
    assert command_lines("console", 10, body) == [(11, "lowres eval m --tasks kk --limit 5")]
    assert command_lines("bash", 1, "lowres env   # a comment\ncd x") == [(2, "lowres env   # a comment")]
    assert command_lines("bash", 1, "pip install -e . && lowres run") == [(2, "lowres run")]
    parse_lowres("lowres run my.yaml --dry-run | head -40")  # stops at the pipe
    assert command_lines("console", 1, "$ CUDA_VISIBLE_DEVICES=1,2 lowres rlvr r.yaml") == [(2, "lowres rlvr r.yaml")]


# ---------------------------------------------------------------- the Colab notebook

PLACEHOLDER = re.compile(r"YOUR_|your[-_]org|OWNER/|<your|<this repo|example\.(com|org)|TODO|FIXME|xxx",
                         re.IGNORECASE)


def _notebook():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return notebook, ["".join(cell["source"]) for cell in notebook["cells"]]


def test_notebook_is_valid_nbformat_4():
    notebook, _ = _notebook()
    assert notebook["nbformat"] == 4 and isinstance(notebook["nbformat_minor"], int)
    assert isinstance(notebook["metadata"], dict)
    for i, cell in enumerate(notebook["cells"]):
        assert cell["cell_type"] in ("markdown", "code"), i
        assert isinstance(cell["source"], list) and all(isinstance(s, str) for s in cell["source"]), i
        assert isinstance(cell["metadata"], dict), i
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell, i


def test_notebook_has_no_placeholders_and_checks_repo_url():
    notebook, sources = _notebook()
    for i, source in enumerate(sources):
        assert not PLACEHOLDER.search(source), f"cell {i} has a placeholder: {PLACEHOLDER.search(source)[0]!r}"
    code = [s for cell, s in zip(notebook["cells"], sources, strict=True) if cell["cell_type"] == "code"]
    first = code[0]
    assert re.match(r"(#.*\n)*REPO_URL = ", first), "the first code cell starts with REPO_URL = …"
    assert "if not REPO_URL" in first and "raise" in first  # stops with a message when left empty
    assert any("REPO_URL" in s for cell, s in zip(notebook["cells"], sources, strict=True)
               if cell["cell_type"] == "markdown"), "a markdown cell says where to put REPO_URL"
    everything = "\n".join(sources)
    assert "drive.mount(" in everything and "output.dir=/content/drive/MyDrive/lowres-runs" in everything
    assert "lowres bench" in everything


def test_notebook_lowres_commands_parse():
    _, sources = _notebook()
    lines = [line.strip()[1:] for source in sources for line in source.splitlines()
             if line.strip().startswith("!lowres ")]
    assert len(lines) >= 5
    for line in lines:
        # Notebook variables ({OUT}) are expanded by IPython; any value parses.
        check_parses(re.sub(r"\{\w+\}", "x", line), f"colab.ipynb: {line}")
