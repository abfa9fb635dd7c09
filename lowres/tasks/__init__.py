"""The task registry: `get_task(name)` and `list_tasks()`.

Built-in tasks are imported lazily (a task module may pull in heavy graders). Users add their own
with `register_task(MyTask())` or the `@task` decorator on a class; see the README.
"""

from __future__ import annotations

import difflib
import importlib

from lowres.errors import UserError
from lowres.tasks.base import R1_SYSTEM, Score, Task, r1_messages

# name -> "module:factory" (a class or a function returning the task) for the built-in tasks.
_BUILTIN = {
    "kk": "lowres.tasks.kk.task:KKTask",
    "kk_easy": "lowres.tasks.kk.task:kk_easy",
    "math": "lowres.tasks.math:MathTask",
    "gsm8k": "lowres.tasks.gsm8k:GSM8KTask",
    "humaneval_plus": "lowres.tasks.humaneval_plus:HumanEvalPlusTask",
    "mmlu_pro": "lowres.tasks.mmlu_pro:MMLUProTask",
}
_REGISTERED: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available to recipes and `lowres eval` under `task.name`."""
    if not isinstance(task, Task):
        raise TypeError(f"{task!r} lacks the Task interface (name, description, load, prompt, score)")
    _REGISTERED[task.name] = task
    return task


def task(cls):
    """Class decorator: `@task class MyTask: ...` registers an instance of it."""
    register_task(cls())
    return cls


def _load_entry_points() -> None:
    """Tasks that installed packages declare in the `lowres.tasks` entry-point group (loaded once)."""
    from lowres.tasks.plugins import load_entry_point_tasks

    load_entry_point_tasks(register_task)


def list_tasks() -> list[str]:
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_task(name: str) -> Task:
    _load_entry_points()
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        known = list_tasks()
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown task {name!r}{hint} (known: {', '.join(known)}; define your own in a recipe's "
                        "tasks: or in a YAML file for lowres eval --task-spec FILE, or in Python with a recipe's "
                        "plugins: [my_tasks.py] or lowres eval --plugin my_tasks.py)")
    module_name, cls_name = _BUILTIN[name].split(":")
    instance = getattr(importlib.import_module(module_name), cls_name)()
    _REGISTERED[name] = instance
    return instance


__all__ = ["R1_SYSTEM", "Score", "Task", "get_task", "list_tasks", "r1_messages", "register_task", "task"]
