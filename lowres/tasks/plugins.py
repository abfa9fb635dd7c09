"""Your own tasks, found by `lowres run` and `lowres eval`.

Two ways in:

- a recipe's `plugins:` list (or `lowres eval --plugin`): Python files (`my_tasks.py`, relative to the
  working folder) or importable module names (`my_pkg.tasks`) whose import registers tasks with
  `register_task` or `@task`;
- the `lowres.tasks` entry-point group of an installed package
  (`[project.entry-points."lowres.tasks"] sums = "my_tasks:Sums"`), loaded the first time a task is
  looked up. An entry point may name a Task instance, a Task class, a function returning a Task, or
  a module that registers its tasks on import.

Every failure is a one-line UserError naming the plugin (or the distribution and entry point).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import traceback
import types
from pathlib import Path

from lowres.errors import UserError

ENTRY_POINT_GROUP = "lowres.tasks"

_entry_points_loaded = False
_entry_points_loading = False


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _module_name_for(path: Path) -> str:
    """A stable module name for a plugin file: the same file gets the same name in every process."""
    stem = re.sub(r"\W", "_", path.stem) or "plugin"
    digest = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:10]
    return f"lowres_plugin_{stem}_{digest}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _where(exc: BaseException, inside, shown: str | None = None) -> str | None:
    """'file:line' of the innermost traceback frame for which inside(path) holds (or of a SyntaxError);
    `shown` replaces the file name (the plugin's path as the user wrote it)."""
    if isinstance(exc, SyntaxError) and exc.filename and inside(exc.filename):
        name = shown or exc.filename
        return f"{name}:{exc.lineno}" if exc.lineno else name
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if inside(frame.filename):
            return f"{shown or frame.filename}:{frame.lineno}"
    return None


def _outside_machinery(filename: str) -> bool:
    """Not a frame of importlib's or lowres's own code: the innermost such frame is the user's."""
    if filename.startswith("<"):
        return False
    try:
        p = Path(filename).resolve()
    except (OSError, ValueError):
        return True
    return not any(root == p or root in p.parents for root in _MACHINERY)


_MACHINERY = (Path(importlib.__file__).resolve().parent, Path(__file__).resolve().parents[1])


def _describe(plugin: str, exc: BaseException, where: str | None) -> str:
    if isinstance(exc, SyntaxError):
        message = exc.msg or ""
    else:
        message = _first_line(str(exc))
    text = f"plugins: {plugin}: {type(exc).__name__}"
    if message:
        text += f": {message}"
    if where:
        text += f" (at {where})"
    return text


def _inside_path(root: Path):
    """A predicate: is a traceback's file name this file, or inside this folder?"""
    def inside(filename: str) -> bool:
        try:
            p = Path(filename).resolve()
        except (OSError, ValueError):
            return False
        return p == root or root in p.parents
    return inside


def _load_file(spec: str) -> None:
    path = Path(spec).expanduser()
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        resolved = path.absolute()
    if not resolved.is_file():
        if resolved.is_dir():
            raise UserError(f"plugins: {spec}: is a folder; name a .py file or an importable module")
        raise UserError(f"plugins: {spec}: no such file (paths are relative to the working folder, {Path.cwd()})")
    module_name = _module_name_for(resolved)
    if module_name in sys.modules:
        return  # imported once per process
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"plugins: {spec}: cannot import this file; name a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(module_name, None)
        raise UserError(_describe(spec, e, _where(e, _inside_path(resolved), spec))) from None


def _module_root(name: str) -> Path | None:
    """The file (or package folder) an importable module lives in, to find its frames in a traceback."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return None
    origin = Path(found.origin).resolve()
    return origin.parent if found.submodule_search_locations is not None else origin


def _load_module(spec: str) -> None:
    if not all(part.isidentifier() for part in spec.split(".")):
        raise UserError(f"plugins: {spec}: not a Python file (.py) nor a module name (like my_pkg.tasks)")
    if spec in sys.modules:
        return
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (spec == missing or spec.startswith(missing + ".")):
            hint = ""
            as_file = Path(*spec.split(".")).with_suffix(".py")
            if as_file.is_file():
                hint = f"; for the file in this folder write {as_file.as_posix()}"
            raise UserError(f"plugins: {spec}: no module named {missing}{hint}") from None
        root = _module_root(spec)
        raise UserError(_describe(spec, e, _where(e, _inside_path(root)) if root else None)) from None
    except (Exception, SystemExit) as e:
        root = _module_root(spec)
        where = _where(e, _inside_path(root)) if root else None
        raise UserError(_describe(spec, e, where)) from None


def load_plugins(specs: list[str]) -> None:
    """Import each plugin (a .py file or a module name) so that the tasks it registers can be found.

    Each plugin is imported at most once per process; calling this again with the same plugins is free.
    """
    for spec in specs or []:
        if not isinstance(spec, str) or not spec.strip():
            raise UserError(f"plugins: {spec!r}: give a .py file or a module name")
        spec = spec.strip()
        if _is_file_spec(spec):
            _load_file(spec)
        else:
            _load_module(spec)


def _entry_point_label(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        try:
            name = dist.name
        except Exception:  # noqa: BLE001 - broken metadata still deserves a readable error
            name = None
        version = getattr(dist, "version", None)
        where = f"{name} {version}" if name and version else (name or "an unnamed distribution")
    else:
        where = "an unknown distribution"
    return f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP}, from {where})"


def _register_entry_point(ep, register_task) -> None:
    from lowres.tasks.base import Task

    obj = ep.load()
    if isinstance(obj, types.ModuleType):
        return  # a module registers its tasks when it is imported
    if isinstance(obj, type):
        obj = obj()
    elif not isinstance(obj, Task) and callable(obj):
        obj = obj()
    if not isinstance(obj, Task):
        raise TypeError(f"{type(obj).__name__} is not a Task (it needs name, description, load, prompt, score); "
                        "point the entry point at a Task instance, a Task class or a module")
    register_task(obj)


def load_entry_point_tasks(register_task) -> None:
    """Load every entry point in the `lowres.tasks` group (once per process) and hand each task to
    `register_task` (the registry's, passed in so that this module does not import the registry back)."""
    global _entry_points_loaded, _entry_points_loading
    if _entry_points_loaded or _entry_points_loading:
        return
    _entry_points_loading = True
    try:
        try:
            eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as e:  # noqa: BLE001 - a broken installed distribution
            raise UserError(f"entry points {ENTRY_POINT_GROUP}: cannot read installed packages' metadata: "
                            f"{type(e).__name__}: {_first_line(str(e))}") from None
        seen = set()
        for ep in eps:
            key = (ep.name, ep.value)
            if key in seen:  # the same distribution on sys.path twice
                continue
            seen.add(key)
            try:
                _register_entry_point(ep, register_task)
            except (Exception, SystemExit) as e:
                at = _where(e, _outside_machinery)
                where = f" (at {at})" if at else ""
                message = _first_line(str(e))
                raise UserError(f"{_entry_point_label(ep)}: {type(e).__name__}"
                                f"{': ' + message if message else ''}{where}; fix or uninstall that package") from None
        _entry_points_loaded = True
    finally:
        _entry_points_loading = False
