"""`pip install .` into a clean virtualenv (not the dev .venv) gives a working
`slurm-trigger`: run from there, away from the repository, it finds its own modules,
ships its example pipelines and talks to the real host cluster.

pip installs only what pyproject.toml declares, from the machine's configured index.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import _token, not_available

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("PYTHON") or "python3"


def run(venv: Path, *argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PIPELINES_", "VIRTUAL_ENV", "PYTHON"))}
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with `pip install` of a copy of the project's package files."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    for name in sorted(packages) + ["pipelines"]:  # every top-level package; pyproject picks
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    env = base / "venv"
    subprocess.run([PYTHON, "-m", "venv", str(env)], check=True, timeout=120)
    done = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def test_the_cli_runs_from_its_own_install(venv: Path, tmp_path: Path) -> None:
    done = run(venv, "slurm-trigger", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "examples" in done.stdout and "validate" in done.stdout
    where = run(venv, "python", "-c", "import importlib.util as u, json, sys; "
                "print(json.dumps({n: (u.find_spec(n) or None) and u.find_spec(n).origin for n in sys.argv[1:]}))",
                "slurm_trigger_dev", "pipelines", "app", cwd=tmp_path)
    assert json.loads(where.stdout) == {"slurm_trigger_dev": None, "pipelines": None, "app": None}, where.stdout


def test_shipped_examples_validate(venv: Path, tmp_path: Path) -> None:
    """The examples come out of the package; validate reads ./pipelines by default."""
    done = run(venv, "slurm-trigger", "examples", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pipelines" / "scripts" / "align-pair.sh").stat().st_mode & 0o111  # still executable
    done = run(venv, "slurm-trigger", "validate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert sorted(r["pipeline"] for r in rows) == sorted(p.stem for p in (ROOT / "pipelines").glob("*.yaml"))
    assert all(r["ok"] for r in rows)
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    done = run(venv, "slurm-trigger", "validate", cwd=elsewhere)  # no ./pipelines: an error, not site-packages
    assert done.returncode != 0 and "pipelines" in done.stderr, done.stderr


def test_ping_the_host_cluster(venv: Path, tmp_path: Path, slurm_clusters: dict[str, Any]) -> None:
    host = slurm_clusters.get("host")
    if host is None:
        not_available("no host cluster in clusters.json")
    token = _token("host")
    done = run(venv, "slurm-trigger", "ping", "--url", host["url"], "-u", host["user"], cwd=tmp_path,
               env={"SLURM_TOKEN": token, "SLURM_ALLOW_HTTP": "true"})
    assert done.returncode == 0, done.stderr
    assert [p["status"] for p in json.loads(done.stdout)["pings"]] == ["UP"]
    assert token not in done.stdout + done.stderr


def test_a_newcomers_mistakes_are_one_line(venv: Path, tmp_path: Path) -> None:
    """From the clean install, on a machine without AWS settings: `ping --url` without a
    token (it would read the token secret), a URL without its scheme, an unknown command."""
    no_aws = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLURM_"))},
              "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
              "AWS_EC2_METADATA_DISABLED": "true"}
    done = subprocess.run([str(venv / "bin" / "slurm-trigger"), "ping", "--url", "http://127.0.0.1:9", "-u", "alice"],
                          cwd=tmp_path, env=no_aws, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("slurm-trigger: no AWS region: set AWS_DEFAULT_REGION") and done.stderr.count("\n") == 1
    done = run(venv, "slurm-trigger", "-u", "alice", "--url", "127.0.0.1:6820", "--token", "eyJhbGciOiJIUzI1NiJ9.e30.x",
               "list-jobs", cwd=tmp_path, env=no_aws)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is not http(s)://host:port" in done.stderr
    done = run(venv, "slurm-trigger", "get-job", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "slurm-trigger describe-job" in done.stdout
