"""Dependencies point down (ARCHITECTURE.md): the tasks are the lower layer, the recipe and the trainer side
sit above them, and the stage launcher uses the multi-process launcher, not the other way round.

Imports are read from the source (ast), the ones inside functions and under TYPE_CHECKING included: a
lazy import is still an arrow, and it is how the cycles these tests guard against came back before.
"""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lowres"
# What a task module may use outside lowres.tasks: the error types, the sandbox for model-written code,
# and the field helper of the task spec. Never the recipe, the trainer side or the reward wrappers.
TASK_LAYER_MAY_IMPORT = {"lowres.errors", "lowres.fields", "lowres.sandbox"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(module: str) -> dict[str, set[str]]:
    """The lowres modules `module` imports, anywhere in its source, each with the names it takes from it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..tasks import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:  # from lowres.tasks import generic: the module itself
                    found.setdefault(submodule, set())
                else:
                    found.setdefault(base, set()).add(alias.name)
    return {name: names for name, names in found.items() if name == "lowres" or name.startswith("lowres.")}


def in_tasks(module: str) -> bool:
    return module == "lowres.tasks" or module.startswith("lowres.tasks.")


def test_the_parser_sees_lazy_and_type_checking_imports(tmp_path, monkeypatch):
    source = tmp_path / "lowres" / "probe.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lowres.recipe import Recipe\n"
                      "def f():\n    from .launch import INTERRUPTED\n    import lowres.rewards\n")
    monkeypatch.setitem(MODULES, "lowres.probe", source)
    assert imported("lowres.probe") == {"lowres.recipe": {"Recipe"}, "lowres.launch": {"INTERRUPTED"},
                                        "lowres.rewards": set()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if in_tasks(m)))
def test_task_modules_import_nothing_above_them(module):
    outside = {name for name in imported(module) if not in_tasks(name)}
    assert outside <= TASK_LAYER_MAY_IMPORT, f"{module} imports {sorted(outside - TASK_LAYER_MAY_IMPORT)}"


def test_the_modules_the_task_layer_uses_stay_below_it():
    for module in TASK_LAYER_MAY_IMPORT:
        assert set(imported(module)) <= TASK_LAYER_MAY_IMPORT, module


def test_the_recipe_imports_no_task_class():
    """The recipe may use the task layer's spec and helpers, never a task itself (that would point back up:
    a task module would then be loaded to read a recipe)."""
    for module, names in imported("lowres.recipe").items():
        if not in_tasks(module):
            continue
        loaded = importlib.import_module(module)
        for name in names:
            value = getattr(loaded, name)
            is_task = isinstance(value, type) and all(hasattr(value, m) for m in ("load", "prompt", "score"))
            assert not is_task, f"lowres.recipe imports the task class {module}.{name}"


def test_reward_values_live_beside_score():
    from lowres import rewards
    from lowres.tasks import base

    assert base.RewardValues.__module__ == "lowres.tasks.base"
    assert "lowres.rewards" not in {name for m in MODULES if in_tasks(m) for name in imported(m)}
    assert rewards.RewardValues is base.RewardValues and rewards.DEFAULT_REWARDS is base.DEFAULT_REWARDS


def test_launch_and_distributed_do_not_import_each_other():
    assert not ("lowres.distributed" in imported("lowres.launch") and "lowres.launch" in imported("lowres.distributed"))
    # The one arrow there is: the stage launcher starts `python -m lowres.distributed` for several processes.
    assert "lowres.launch" not in imported("lowres.distributed")


def test_no_module_imports_itself_through_others():
    """No import circle anywhere in lowres/, lazy imports and TYPE_CHECKING ones included: a circle is how a
    module ends up needing half the package to load, and how a half-initialised module gets imported."""
    graph = {module: {name for name in imported(module) if name in MODULES and name != module}
             for module in MODULES}
    circles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" → ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(circles)
