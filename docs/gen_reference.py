"""The reference pages, generated from the code at every `mkdocs build` (an MkDocs hook: mkdocs.yml `hooks:`).

- reference/recipe.md: every recipe section and key, from the dataclasses in `lowres/recipe.py` (type, default,
  bounds and help text from each field's metadata).
- reference/cli.md: every command, subcommand, argument and option, from the Click commands in `lowres/cli.py`.

Nothing here is written by hand, so the pages cannot drift from the code. `tests/test_docs.py` builds the site
and checks that every key and every option is on these pages.

    python docs/gen_reference.py recipe|cli   # print one page's Markdown
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import re
import sys
import typing

RECIPE_PAGE = "reference/recipe.md"
CLI_PAGE = "reference/cli.md"


# ---------------------------------------------------------------- Markdown helpers

def _text(text: str) -> str:
    """Plain text for a Markdown table cell: HTML and Markdown characters escaped, `code` kept as code."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part)
        else:
            part = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]|#])", r"\\\1", part))
    return "".join(out)


def _code(text: str) -> str:
    """Inline code for a table cell (backticks doubled around text that holds one). A `|` inside a code
    span does not split a Python-Markdown table cell, so it is left as it is."""
    text = str(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ---------------------------------------------------------------- the recipe

def _bounds(meta: dict) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    parts = []
    if lo is not None:
        parts.append(f"> {lo:g}" if meta.get("min_exclusive") else f"≥ {lo:g}")
    if hi is not None:
        parts.append(f"≤ {hi:g}")
    return ", ".join(parts)


def public_fields(cls, path: str):
    """(field, resolved type, key path) for each key of a recipe section a user may set."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("internal"):
            yield f, hints[f.name], f"{path}.{f.name}" if path else f.name


def recipe_sections():
    """[(path, dataclass, doc)] for every section, the top level first; a mapping of sections (tasks) is
    listed as `tasks.<name>`."""
    from lowres.recipe import Recipe

    found = []

    def walk(cls, path):
        found.append((path, cls))
        later = []  # mappings of sections (tasks.<name>) after the plain sections
        for _, tp, sub in public_fields(cls, path):
            if dataclasses.is_dataclass(tp):
                walk(tp, sub)
            elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                later.append((typing.get_args(tp)[1], f"{sub}.<name>"))
        for cls_, sub in later:
            walk(cls_, sub)

    walk(Recipe, "")
    return found


def section_anchor(path: str) -> str:
    """The id of a recipe section's heading: rlvr.lora → recipe-rlvr-lora; the top level → recipe-top."""
    return "recipe-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top")


def recipe_reference_md() -> str:
    from lowres.recipe import _type_name

    lines = [
        "# Recipe reference",
        "",
        "Every section and key a recipe may hold, generated from the recipe dataclasses in `lowres/recipe.py` "
        "when the site is built. *required* keys have no default. Bounds are checked when a recipe is "
        "loaded (`lowres validate`); an unknown key is an error with a did-you-mean.",
        "",
        "`lowres recipes show NAME --resolved` prints a recipe with every default filled in, and "
        "`--set section.key=value` overrides any key from the command line (values are YAML).",
        "",
    ]
    for path, cls in recipe_sections():
        title = path or "top level"
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
        anchor = section_anchor(path)
        lines += [f"## {html.escape(title)} {{#{anchor}}}", "", _text(doc), ""]
        fields = list(public_fields(cls, path))
        subs = [key for _, tp, key in fields if dataclasses.is_dataclass(tp)]
        if subs:
            names = ", ".join(f"[{_code(sub)}](#{section_anchor(sub)})" for sub in subs)
            lines += [f"Sections: {names}.", ""]
        if len(subs) == len(fields):
            continue
        lines += ["| key | type | default | bounds | what it does |", "|---|---|---|---|---|"]
        for f, tp, key in fields:
            if dataclasses.is_dataclass(tp):
                continue  # a section of its own, below
            if f.metadata.get("required"):
                default = "*required*"
            elif f.default is not dataclasses.MISSING:
                default = _code(_yaml_value(f.default))
            else:
                default = _code(_yaml_value(f.default_factory()))
            if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
                kind = f"a mapping: name → section [{_code(key + '.<name>')}](#{section_anchor(key + '.<name>')})"
            else:
                kind = _text(_type_name(tp))
            lines.append(f"| {_code(key)} | {kind} | {default} | {_text(_bounds(f.metadata))} | "
                         f"{_text(f.metadata.get('help', ''))} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- the command line

def _unset(value) -> bool:
    return value is None or type(value).__name__ == "Sentinel" or repr(value).startswith("Sentinel.")


def _type(param, ctx) -> str:
    import click

    tp = param.type
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
        return "flag"
    if isinstance(tp, click.Choice):
        return "one of " + ", ".join(_code(c) for c in tp.choices)
    if isinstance(tp, (click.IntRange, click.FloatRange)):
        bounds = []
        if tp.min is not None:
            bounds.append(f"{'>' if tp.min_open else '≥'} {tp.min:g}")
        if tp.max is not None:
            bounds.append(f"{'<' if tp.max_open else '≤'} {tp.max:g}")
        kind = "integer" if isinstance(tp, click.IntRange) else "number"
        return kind + (", " + ", ".join(bounds) if bounds else "")
    names = {"integer": "integer", "float": "number", "text": "text", "path": "path", "boolean": "true or false"}
    return names.get(tp.name, _text(tp.name))


def _commands(group, ctx, prefix):
    """[(full name, command, context)] for every command under `group`, depth first, as `--help` lists them."""
    import click

    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        found.append((f"{prefix} {name}", command, sub))
        if isinstance(command, click.Group):
            found += _commands(command, sub, f"{prefix} {name}")
    return found


def _metavar(param, ctx) -> str:
    """click ≥ 8.2 takes the context; 8.1 does not."""
    try:
        return param.make_metavar(ctx)
    except TypeError:
        return param.make_metavar()


def command_anchor(full_name: str) -> str:
    """The id of a command's heading on the CLI page: `lowres kk generate` → cmd-kk-generate."""
    rest = full_name.split()[1:]
    return "cmd-" + ("-".join(rest) if rest else "lowres")


def cli_reference_md() -> str:
    import click

    from lowres.cli import cli

    root = click.Context(cli, info_name="lowres")
    lines = [
        "# Command reference",
        "",
        "Every `lowres` command, argument and option, generated from the Click commands in `lowres/cli.py` "
        "when the site is built. Every command also takes `-h`/`--help`. Bad input ends in one line and exit "
        "code 2 (see [When things go wrong](../troubleshooting.md)).",
        "",
    ]
    for full, command, ctx in [("lowres", cli, root), *_commands(cli, root, "lowres")]:
        lines += [f"## {full} {{#{command_anchor(full)}}}", ""]
        usage = " ".join(command.collect_usage_pieces(ctx))
        lines += ["```text", f"{ctx.command_path} {usage}".rstrip(), "```", ""]
        help_text = inspect.cleandoc(command.help or "").replace("\b\n", "")
        for paragraph in help_text.split("\n\n"):
            if paragraph.strip():
                lines += [_text(paragraph), ""]
        if isinstance(command, click.Group):
            subs = [(n, command.get_command(ctx, n)) for n in command.list_commands(ctx)]
            lines += ["| command | what it does |", "|---|---|"]
            for name, sub in subs:
                if sub is not None and not sub.hidden:
                    target = f"#{command_anchor(f'{full} {name}')}"
                    lines.append(f"| [{_code(f'{full} {name}')}]({target}) | "
                                 f"{_text(sub.get_short_help_str(limit=200))} |")
            lines.append("")
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            lines += ["| argument | required | type |", "|---|---|---|"]
            for p in arguments:
                repeat = ", one or more" if p.nargs == -1 and p.required else (", any number" if p.nargs == -1 else "")
                lines.append(f"| {_code(_metavar(p, ctx))} | {'yes' if p.required else 'no'}{repeat} | "
                             f"{_type(p, ctx)} |")
            lines.append("")
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        if options:
            lines += ["| option | type | default | what it does |", "|---|---|---|---|"]
            for p in options:
                names = ", ".join(_code(o) for o in [*p.opts, *p.secondary_opts])
                if p.metavar:
                    names += f" {_code(p.metavar)}"
                default = p.get_default(ctx, call=False)
                if p.required:
                    shown = "*required*"
                elif _unset(default) or (p.is_flag and default is False and not p.secondary_opts) or \
                        (p.multiple and not default):
                    shown = ""
                elif callable(default):
                    shown = ""
                elif isinstance(default, tuple):
                    shown = _code(_yaml_value(list(default)))
                else:
                    shown = _code(_yaml_value(default if isinstance(default, (int, float, str)) else str(default)))
                notes = []
                if p.multiple and "repeatable" not in (p.help or ""):
                    notes.append("repeatable")
                if p.envvar and f"${p.envvar}" not in (p.help or ""):
                    notes.append(f"or ${p.envvar}")
                help_text = _text(p.help or "")
                if notes:
                    help_text = (help_text + " " if help_text else "") + f"({', '.join(notes)})"
                lines.append(f"| {names} | {_type(p, ctx)} | {shown} | {help_text} |")
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- the MkDocs hook

def on_files(files, config):
    """Add the two generated pages to the site (they exist only in the build, never in docs/)."""
    from mkdocs.structure.files import File

    for page, make in ((RECIPE_PAGE, recipe_reference_md), (CLI_PAGE, cli_reference_md)):
        files.append(File.generated(config, page, content=make()))
    return files


if __name__ == "__main__":
    pages = {"recipe": recipe_reference_md, "cli": cli_reference_md}
    if len(sys.argv) != 2 or sys.argv[1] not in pages:
        sys.exit("usage: python docs/gen_reference.py recipe|cli")
    print(pages[sys.argv[1]]())
