"""What ships where: the Lambda zip holds only what the functions run, and the installable
package declares every distribution it imports.

The zip is built by ``chalice package`` itself, offline (the project copy has an empty
requirements.txt, so Chalice downloads nothing: the third-party part of the zip is not
what these tests are about). The first-party part is compared with the modules app.py's
handlers can reach by their imports (read with ``ast``, imports inside functions
included, as app.py imports the library only when a handler first runs).
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What no function runs, wherever it lives: the local loop, the tests and the tools.
DEV_ONLY = ("slurm_trigger_dev/", "tests/", "scripts/", "bench/", "docs/", "infra/", "headnode/")


def first_party() -> set[str]:
    """The repository's top-level packages (app.py's own folder)."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py")}


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def reachable_from_app() -> set[str]:
    """Repository files (relative paths) that app.py's imports reach, transitively."""
    ours, seen, todo = first_party(), set(), [ROOT / "app.py"]
    while todo:
        path = todo.pop()
        rel = path.relative_to(ROOT).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if path.name == "__init__.py":
            package = package.removesuffix(".__init__")
        else:
            package = package.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                if parts[0] not in ours:
                    continue
                for i in range(1, len(parts) + 1):  # a module imports its packages' __init__ too
                    found = module_file(".".join(parts[:i]))
                    if found is not None:
                        todo.append(found)
    return seen


@pytest.fixture(scope="module")
def zip_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file list of the zip ``chalice package --stage dev`` builds from a clean copy."""
    base = tmp_path_factory.mktemp("zip")
    project = base / "project"
    project.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(ROOT / "app.py", project / "app.py")
    for name in ("chalicelib", "vendor", "pipelines"):  # what Chalice packages (vendor's links followed)  # rename: keep
        if (ROOT / name).is_dir():  # and the folder slurm_trigger's examples link points to
            shutil.copytree(ROOT / name, project / name, symlinks=name != "vendor", ignore=skip)
    shutil.copytree(ROOT / ".chalice", project / ".chalice", ignore=shutil.ignore_patterns("deployments", "venv"))
    (project / "requirements.txt").write_text("")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    done = subprocess.run([str(VENV_BIN / "chalice"), "package", "--stage", "dev", str(base / "out")],
                          cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(base / "out" / "deployment.zip") as z:
        return z.namelist()


def ours_in_zip(names: list[str]) -> set[str]:
    tops = first_party() | {p.name for p in (ROOT / "vendor").iterdir() if p.is_dir()}
    return {n for n in names if n.split("/")[0] in tops or n == "app.py"}


def test_zip_holds_no_dev_module(zip_names: list[str]) -> None:
    assert zip_names, "empty zip"
    dev = [n for n in zip_names if n.startswith(DEV_ONLY) or "localrun" in n or n.endswith(".pyc")]
    assert not dev, f"dev-only files in the Lambda zip: {dev}"


def test_zip_holds_only_what_the_functions_import(zip_names: list[str]) -> None:
    """Every first-party module in the zip is one app.py reaches, and the reverse (a module
    a handler imports but the zip lacks is an ImportError only Lambda would meet)."""
    reachable = reachable_from_app()
    modules = {n for n in ours_in_zip(zip_names) if n.endswith(".py")}
    unused = sorted(modules - reachable - {"chalicelib/__init__.py"})  # the design card's folder, whatever it holds; rename: keep
    assert not unused, f"in the zip, but no function imports them: {unused}"
    missing = sorted(reachable - modules)
    assert not missing, f"the functions import these, the zip lacks them: {missing}"


def test_zip_holds_the_pipelines(zip_names: list[str]) -> None:
    """PIPELINES_PATH=/var/task/pipelines in every stage: vendor/pipelines puts them there."""
    for stage in json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"].values():
        assert stage["environment_variables"]["PIPELINES_PATH"] == "/var/task/pipelines"
    shipped = {n.removeprefix("pipelines/") for n in zip_names if n.startswith("pipelines/")}
    assert {p.name for p in (ROOT / "pipelines").glob("*.yaml")} <= shipped


# --------------------------------------------------------------------------- the package

def installed_packages() -> set[str]:
    """The top-level packages ``pip install .`` installs (pyproject's find patterns)."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return {name for name in first_party() if any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), name) for p in patterns)}


def third_party_imports() -> dict[str, str]:
    """Top-level module -> a file importing it, over everything the package installs."""
    ours, stdlib, out = first_party() | {"app"}, sys.stdlib_module_names, {}
    for package in installed_packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top not in ours and top not in stdlib and top != "__future__":
                        out.setdefault(top, path.relative_to(ROOT).as_posix())
    return out


def declared() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def distributions_of(req: Requirement) -> set[str]:
    """The distribution and what its requested extras pull in (one level)."""
    out = {canonicalize_name(req.name)}
    for text in importlib.metadata.requires(req.name) or []:
        dep = Requirement(text)
        if dep.marker and any(dep.marker.evaluate({"extra": e}) for e in req.extras):
            out.add(canonicalize_name(dep.name))
    return out


def test_the_package_declares_every_distribution_it_imports() -> None:
    """`pip install .` gave a CLI that died on `import msgspec`: never again."""
    covered = set().union(*(distributions_of(r) for r in declared().values()))
    by_module = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in third_party_imports().items():
        dists = {canonicalize_name(d) for d in by_module.get(module, [module])}
        if not dists & covered:
            missing[module] = where
    # Building Powertools' Tracer imports the X-Ray SDK (slurm_trigger/observability.py).
    if not {"aws-xray-sdk"} & covered:
        missing["aws_xray_sdk"] = "Tracer()"
    assert not missing, f"add to pyproject.toml dependencies: {missing}"


def test_requirements_pins_satisfy_the_package_ranges() -> None:
    """requirements.txt (what Chalice packages) and pyproject (what pip installs) agree."""
    wanted = declared()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        pin = Requirement(line)
        version = next(iter(pin.specifier)).version
        req = wanted.get(canonicalize_name(pin.name))
        if req is not None:
            assert req.specifier.contains(version), f"requirements.txt pins {pin}, pyproject wants {req}"
    pinned = {canonicalize_name(Requirement(line.split("#")[0]).name)
              for line in (ROOT / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()}
    assert set(wanted) <= pinned, "pin every package dependency in requirements.txt"


def test_examples_ship_as_package_data() -> None:
    """`slurm-trigger examples` copies what pyproject's package-data ships: the pipelines."""
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    (package, patterns), = data.items()
    folder = ROOT.joinpath(*package.split("."))
    shipped = {p.relative_to(folder).as_posix() for pattern in patterns for p in folder.glob(pattern)}
    expected = {f"examples/{p.relative_to(ROOT / 'pipelines').as_posix()}" for p in (ROOT / "pipelines").rglob("*") if p.is_file()}
    assert shipped == expected
