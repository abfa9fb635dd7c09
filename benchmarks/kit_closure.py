"""Does the GPU kit hold everything its wheels need on the GPU machine? (`gpu_check.sh prepare` runs this.)

    python benchmarks/kit_closure.py .gpu_kit/wheels [--needed-preinstalled]

No wheel may install a top-level name of the standard library (the kit is first on PYTHONPATH). Every
non-extra `Requires-Dist` of every wheel in the folder, with its markers evaluated for CPython 3.12 on
x86-64 Linux, must be met by a wheel of the kit (name and version range), by a distribution the GPU machine
has preinstalled (benchmarks/gpu_machine_packages.txt; its version range too, where the list knows the
version), or be a deliberate omission listed with its reason in benchmarks/kit_omissions.txt. Anything else
is printed and the exit code is 1: the kit would fail on the GPU machine with a ModuleNotFoundError, as the
first one did without `multiprocess` (desk check 2, K1).

--needed-preinstalled prints, one per line, the preinstalled requirements the kit relies on (as pip
requirement strings), so that `rehearse` installs exactly those into its copy of the GPU machine.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

HERE = Path(__file__).resolve().parent
PREINSTALLED = HERE / "gpu_machine_packages.txt"
OMISSIONS = HERE / "kit_omissions.txt"

# Top-level names of the standard library (sys.stdlib_module_names leaves out its `test` package).
STDLIB = set(sys.stdlib_module_names) | {"test"}
# The GPU machine: CPython 3.12 on x86-64 Linux (its python3 is 3.12.3).
TARGET = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path) -> dict[str, str]:
    """`name` or `name==version` per line, or `name: reason` (omissions); # comments. -> name: version/reason."""
    entries = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            name, value = (part.strip() for part in line.split(":", 1))
        else:
            name, _, value = (part.strip() for part in line.partition("=="))
        entries[normalise(name)] = value
    return entries


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str], set[str]]:
    """(name, version, Requires-Dist lines, top-level names it installs)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = Parser().parsestr(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode("utf-8"))
    top = {n.split("/", 1)[0].removesuffix(".py") for n in names if ".dist-info/" not in n and ".data/" not in n}
    return meta["Name"], meta["Version"], meta.get_all("Requires-Dist") or [], top


def applies(req: Requirement) -> bool:
    """Whether a requirement is needed on the target without any extra."""
    return req.marker is None or req.marker.evaluate({**TARGET, "extra": ""})


def check(wheels: Path) -> tuple[list[str], list[str]]:
    """(problems, preinstalled requirements relied on)."""
    kit = {}
    requirements = []
    problems, relied_on = [], set()
    for wheel in sorted(wheels.glob("*.whl")):
        name, version, requires, top = wheel_metadata(wheel)
        kit[normalise(name)] = Version(version)
        requirements += [(name, Requirement(line)) for line in requires]
        # The kit goes first on PYTHONPATH: a top-level name of the standard library would shadow it (torchao's
        # test/ package did, desk check 2 K5).
        problems += [f"{wheel.name} installs a top-level {shadow!r}, which would shadow the standard library's "
                     "(strip it in prepare)" for shadow in sorted(top & STDLIB)]
    preinstalled, omitted = read_list(PREINSTALLED), read_list(OMISSIONS)
    for needer, req in requirements:
        if not applies(req):
            continue
        name = normalise(req.name)
        if name in kit:
            if not req.specifier.contains(kit[name], prereleases=True):
                problems.append(f"{needer} needs {req.name}{req.specifier}; the kit has {kit[name]}")
        elif name in preinstalled:
            known = preinstalled[name]
            if known and not req.specifier.contains(Version(known), prereleases=True):
                problems.append(f"{needer} needs {req.name}{req.specifier}; the GPU machine has {known} "
                                "(add the version it needs to the kit)")
            relied_on.add(f"{name}=={known}" if known else name)
        elif name not in omitted:
            problems.append(f"{needer} needs {req.name}{req.specifier or ''}: neither in the kit nor preinstalled "
                            f"on the GPU machine (add it to PINNED in gpu_check.sh, or to {OMISSIONS.name} with "
                            "the reason it is not needed)")
    return sorted(set(problems)), sorted(relied_on)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheels", type=Path)
    parser.add_argument("--needed-preinstalled", action="store_true")
    args = parser.parse_args()
    problems, relied_on = check(args.wheels)
    if args.needed_preinstalled:
        print("\n".join(relied_on))
        return 0
    for problem in problems:
        print(f"closure: {problem}", file=sys.stderr)
    if problems:
        return 1
    omitted = read_list(OMISSIONS)
    print(f"closure: every requirement of the kit's wheels is met ({len(relied_on)} by the GPU machine's own "
          f"packages; {len(omitted)} left out on purpose: {', '.join(omitted)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
