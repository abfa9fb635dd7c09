"""The user's own tasks: a recipe's `plugins:`, `lowres eval --plugin`, the `lowres.tasks` entry points,
and the manual's "Bring your own task" example (docs/tasks.md) (fast: no model is loaded)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lowres.tasks as tasks_registry
from lowres.cli import cli
from lowres.errors import UserError
from lowres.recipe import RecipeError, load_recipe, recipe_from_dict
from lowres.tasks import get_task, list_tasks, register_task
from lowres.tasks import plugins as plugins_module
from lowres.tasks.plugins import load_entry_point_tasks, load_plugins

TASKS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
MODEL = {"name_or_path": "embedded:smollm2-135m"}

TASK_SOURCE = '''
from lowres.tasks import Score, r1_messages, register_task


class {cls}:
    name = "{name}"
    description = "a test task"

    def load(self, split, limit=None, seed=0, path=None, **_):
        return [{{"id": "1", "q": "one", "answer": "1"}}]

    def prompt(self, row):
        return r1_messages(row["q"])

    def score(self, completion, row):
        ok = row["answer"] in completion
        return Score(formatted=True, correct=ok, reward=float(ok))
'''


def task_module(cls: str, name: str, register: bool = True) -> str:
    return TASK_SOURCE.format(cls=cls, name=name) + (f"\nregister_task({cls}())\n" if register else "")


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Each test starts from the built-in registry and re-reads entry points; plugin modules are dropped."""
    monkeypatch.setattr(tasks_registry, "_REGISTERED", dict(tasks_registry._REGISTERED))
    monkeypatch.setattr(plugins_module, "_entry_points_loaded", False)
    modules_before = set(sys.modules)
    yield
    for name in set(sys.modules) - modules_before:
        if name.startswith("lowres_plugin_") or name.startswith("plug_"):
            del sys.modules[name]


def recipe_with(plugins, **extra):
    return recipe_from_dict({"name": "p", "model": MODEL, "plugins": plugins, **extra}, "r.yaml")


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- plugins: in a recipe

def test_plugin_file_registers_a_task_found_after_recipe_load(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(task_module("Mine", "mine_file"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError):
        get_task("mine_file")
    recipe = recipe_with(["my_tasks.py"], data={"target": {"task": "mine_file"}}, eval={"tasks": ["mine_file"]})
    assert recipe.plugins == ["my_tasks.py"]
    task = get_task(recipe.data.target.task)
    assert task.load("test")[0]["answer"] == "1"
    assert task.score("<answer>1</answer>", {"answer": "1"}).correct
    assert "mine_file" in list_tasks()


def test_plugin_file_is_imported_once_per_process(tmp_path, monkeypatch):
    marker = tmp_path / "imports.txt"
    (tmp_path / "counted.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n" + task_module("C", "counted"))
    monkeypatch.chdir(tmp_path)
    recipe_with(["counted.py"])
    recipe_with(["./counted.py"])  # the same file, written another way
    load_plugins([str(tmp_path / "counted.py")])
    assert marker.read_text() == "x"


def test_plugin_module_name_via_sys_path(tmp_path, monkeypatch):
    pkg = tmp_path / "plug_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(task_module("Mod", "mine_module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe_with(["plug_pkg.tasks"])
    assert get_task("mine_module").name == "mine_module"


def test_task_decorator_in_a_plugin(tmp_path):
    path = tmp_path / "decorated.py"
    path.write_text(TASK_SOURCE.format(cls="Dec", name="decorated").replace("class Dec", "@task\nclass Dec")
                    .replace("import Score,", "import Score, task,"))
    load_plugins([str(path)])
    assert get_task("decorated").description == "a test task"


def test_missing_plugin_file_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as e:
        recipe_with(["my_tasks.py"])
    assert one_line(str(e.value)).startswith("r.yaml: plugins: my_tasks.py: no such file")


def test_plugin_from_set_override_blames_the_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("name: p\nmodel: {name_or_path: embedded:smollm2-135m}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe("r.yaml", ["plugins=[nope.py]"])
    assert one_line(str(e.value)).startswith("--set plugins=[nope.py]: nope.py: no such file")
    (tmp_path / "ok_tasks.py").write_text(task_module("Ok", "ok_from_set"))
    assert load_recipe("r.yaml", ["plugins=[ok_tasks.py]"]).plugins == ["ok_tasks.py"]
    assert get_task("ok_from_set").name == "ok_from_set"


def test_unknown_plugin_module_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as e:
        recipe_with(["plug_nosuch.tasks"])
    assert one_line(str(e.value)) == "r.yaml: plugins: plug_nosuch.tasks: no module named plug_nosuch"
    # a module name for a file in this folder: say how to name the file
    (tmp_path / "plug_here.py").write_text("")
    with pytest.raises(UserError, match=r"plugins: plug_here: no module named plug_here; .* plug_here\.py"):
        load_plugins(["plug_here"])
    with pytest.raises(UserError, match="not a Python file"):
        load_plugins(["my-tasks"])


def test_exception_in_plugin_names_file_type_message_and_line(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("import os\n\ndef build():\n    raise ValueError('no rows\\nsecond line')\n\n"
                                        "build()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as e:
        recipe_with(["broken.py"])
    message = one_line(str(e.value))
    assert message == "r.yaml: plugins: broken.py: ValueError: no rows (at broken.py:4)"
    assert "lowres_plugin_broken" not in " ".join(sys.modules)  # a failed import is not cached


def test_syntax_error_and_missing_dependency_in_plugin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "syntax.py").write_text("x = 1\ndef f(:\n    pass\n")
    with pytest.raises(UserError) as e:
        load_plugins(["syntax.py"])
    assert re.fullmatch(r"plugins: syntax\.py: SyntaxError: .* \(at syntax\.py:2\)", one_line(str(e.value)))

    (tmp_path / "plug_needs.py").write_text("x = 1\nimport plug_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as e:
        load_plugins(["plug_needs"])
    message = one_line(str(e.value))
    assert message.startswith("plugins: plug_needs: ModuleNotFoundError: No module named "
                              "'plug_not_installed_anywhere' (at ")
    assert message.endswith("plug_needs.py:2)")


def test_plugin_error_through_the_console_script_is_one_line(tmp_path):
    (tmp_path / "boom.py").write_text("raise RuntimeError('kaboom')\n")
    (tmp_path / "r.yaml").write_text("name: p\nmodel: {name_or_path: embedded:smollm2-135m}\nplugins: [boom.py]\n")
    proc = subprocess.run([sys.executable, "-m", "lowres", "validate", "r.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "r.yaml: plugins: boom.py: RuntimeError: kaboom (at boom.py:1)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---------------------------------------------------------------- lowres eval --plugin and the pipeline

def test_eval_help_lists_plugin_and_a_bad_plugin_is_exit_2(tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0 and "--plugin" in result.output
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["eval", "some-model", "--tasks", "x", "--plugin", "nope.py"])
    assert result.exit_code == 2
    assert "plugins: nope.py: no such file" in result.output and "Traceback" not in result.output


def test_pipeline_eval_command_passes_each_plugin(tmp_path, monkeypatch):
    from lowres.pipeline import eval_command

    (tmp_path / "a.py").write_text(task_module("A", "task_a"))
    (tmp_path / "plug_b.py").write_text(task_module("B", "task_b"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = recipe_with(["a.py", "plug_b"], eval={"tasks": ["task_a", "task_b"]})
    args = eval_command(recipe, "embedded:smollm2-135m", None, "base", tmp_path / "out")
    assert args[0] == "eval"
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--plugin"]
    assert pairs == ["a.py", "plug_b"]
    assert "task_a,task_b" in args
    no_plugins = eval_command(recipe_with([]), "m", None, "base", tmp_path / "out")
    assert "--plugin" not in no_plugins


# ---------------------------------------------------------------- the lowres.tasks entry points

def make_dist(site: Path, entry_points: str, module: str, source: str, dist: str = "plug-dist") -> None:
    """An installed distribution as pip leaves it: a dist-info folder with entry_points.txt, and its module."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lowres.tasks]\n" + entry_points + "\n")
    (site / f"{module}.py").write_text(source)


def test_entry_point_class_instance_and_module(tmp_path, monkeypatch):
    site = tmp_path / "site"
    source = (task_module("EPClass", "ep_class", register=False)
              + TASK_SOURCE.format(cls="EPInst", name="ep_instance") + "\nINSTANCE = EPInst()\n")
    make_dist(site, "ep_class = plug_ep:EPClass\nep_instance = plug_ep:INSTANCE\nmore = plug_ep_more",
              "plug_ep", source)
    (site / "plug_ep_more.py").write_text(task_module("More", "ep_module"))
    monkeypatch.syspath_prepend(str(site))
    assert {"ep_class", "ep_instance", "ep_module"} <= set(list_tasks())
    assert get_task("ep_class").name == "ep_class"
    assert get_task("ep_instance").load("test")[0]["id"] == "1"
    assert get_task("ep_module").score("1", {"answer": "1"}).reward == 1.0


def test_entry_points_are_loaded_lazily_once(tmp_path, monkeypatch):
    calls = []
    real = plugins_module.importlib.metadata.entry_points

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(plugins_module.importlib.metadata, "entry_points", counting)
    get_task("kk")
    get_task("kk")
    list_tasks()
    load_entry_point_tasks(register_task)
    assert calls == [{"group": "lowres.tasks"}]


def test_broken_entry_point_names_distribution_and_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_dist(site, "sums = plug_broken_ep:Sums", "plug_broken_ep", "x = 1\nraise ImportError('needs torch 9')\n",
              dist="broken-dist")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError) as e:
        get_task("kk")
    message = one_line(str(e.value))
    assert "entry point 'sums' = 'plug_broken_ep:Sums'" in message
    assert "broken-dist 1.0" in message
    assert "ImportError: needs torch 9" in message and "plug_broken_ep.py:2" in message


def test_entry_point_that_is_not_a_task(tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_dist(site, "bad = plug_not_task:VALUE", "plug_not_task", "VALUE = 3\n", dist="odd-dist")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError, match=r"'bad' = 'plug_not_task:VALUE'.*odd-dist.*is not a Task"):
        list_tasks()


# ---------------------------------------------------------------- unknown task names

def test_unknown_task_suggests_a_close_name():
    with pytest.raises(UserError) as e:
        get_task("gsm9k")
    message = one_line(str(e.value))
    assert message.startswith("unknown task 'gsm9k'; did you mean 'gsm8k'? (known: ")
    assert "kk_easy" in message
    with pytest.raises(UserError) as e:
        get_task("zzzzzz")
    assert "did you mean" not in str(e.value) and "(known: " in str(e.value)


def test_unknown_task_in_eval_names_every_way_to_define_one(tmp_path):
    """Tasks without Python (a recipe's tasks:, --task-spec FILE) as well as plugins."""
    from click.testing import CliRunner

    from lowres.cli import cli

    result = CliRunner().invoke(cli, ["eval", "embedded:smollm2-135m", "--tasks", "capitals", "--out",
                                      str(tmp_path / "e")])
    assert result.exit_code == 2
    message = one_line(result.output.strip())
    assert message.startswith("error: unknown task 'capitals'")
    for way in ("a recipe's tasks:", "lowres eval --task-spec FILE", "plugins: [my_tasks.py]",
                "lowres eval --plugin my_tasks.py"):
        assert way in message


# ---------------------------------------------------------------- the manual's example (docs/tasks.md), as written

def readme_section() -> str:
    """The manual's "Bring your own task" section (docs/tasks.md)."""
    text = TASKS_PAGE.read_text(encoding="utf-8")
    start = text.index("## Bring your own task")
    # up to the next heading (## or ###; a "# comment" inside a code block is not one)
    end = re.compile(r"\n#{2,3} ").search(text, start + 1)
    return text[start:end.start() if end else len(text)]


def readme_block(section: str, language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    assert blocks, f"no ```{language} block under '## Bring your own task' in docs/tasks.md"
    return blocks[0]


def test_readme_bring_your_own_task_runs_as_written(tmp_path, monkeypatch):
    section = readme_section()
    (tmp_path / "my_tasks.py").write_text(readme_block(section, "python"))
    recipe_yaml = readme_block(section, "yaml")
    assert "plugins: [my_tasks.py]" in recipe_yaml
    (tmp_path / "sums.yaml").write_text(recipe_yaml)
    monkeypatch.chdir(tmp_path)

    recipe = load_recipe("sums.yaml")
    assert recipe.data.target.task == "sums" and recipe.eval.tasks == ["sums"]
    sums = get_task("sums")
    rows = sums.load("test")
    assert len(rows) == 81
    row = next(r for r in rows if r["a"] == 2 and r["b"] == 3)
    assert "2 + 3" in sums.prompt(row)[-1]["content"]
    score = sums.score("<think>2 plus 3</think> <answer>5</answer>", row)
    assert score.correct and score.formatted and score.reward == 1.0 and score.extracted == "5"
    assert not sums.score("<answer>6</answer>", row).correct
    assert sums.load("test", limit=4) == rows[:4]

    # the entry-point way the section shows, as pip would install it
    toml = readme_block(section, "toml")
    value = re.search(r'^sums\s*=\s*"([^"]+)"', toml, re.M).group(1)
    assert value == "my_tasks:Sums"
    tasks_registry._REGISTERED.pop("sums")
    site = tmp_path / "site"
    make_dist(site, f"sums = {value}", "my_tasks", readme_block(section, "python"), dist="my-sums")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins_module, "_entry_points_loaded", False)
    try:
        assert get_task("sums").score("<answer>5</answer>", row).correct
    finally:
        sys.modules.pop("my_tasks", None)
