"""The slurm subcommands against the real local slurmrestd, every served version:
through ``slurm_trigger_cli.main`` (capsys) and once through the installed entry point."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from slurm_trigger_cli import main

pytestmark = pytest.mark.real_slurm
WAIT_SECONDS = 120


def cli(target: Any, capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, Any, str]:
    token = target.token()
    code = main([argv[0], "--url", target.url, "--token", token, "-u", target.user,
                 "--api-version", target.version, *argv[1:]])
    out, err = capsys.readouterr()
    assert token not in out and token not in err
    try:
        data = json.loads(out) if out.strip() else None
    except ValueError:
        data = out
    return code, data, err


def job_file(target: Any, tmp_path: Path, tag: str, script: str) -> str:
    path = tmp_path / f"{tag}.json"
    path.write_text(json.dumps({
        "name": f"cli-{tag}",
        "script": f"#!/bin/bash\n{script}\n",
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        "working_directory": target.workdir,
        "comment": f"cli-test {tag}",
        "time_limit": 5,
    }))
    return str(path)


def test_ping_diag_versions(slurm_target: Any, capsys: pytest.CaptureFixture) -> None:
    code, data, _ = cli(slurm_target, capsys, "ping")
    assert code == 0 and [p["status"] for p in data["pings"]] == ["UP"]
    code, data, _ = cli(slurm_target, capsys, "diag")
    assert code == 0 and "statistics" in data
    code, data, _ = cli(slurm_target, capsys, "versions")
    [data] = data
    assert code == 0 and data["negotiated"] == slurm_target.version and slurm_target.version in data["served"]
    assert data["accounting"] is slurm_target.accounting


def test_submit_list_describe_cancel(slurm_target: Any, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    code, data, _ = cli(slurm_target, capsys, "submit-job", "-j", job_file(slurm_target, tmp_path, tag, "exit 3"))
    assert code == 0
    failing = data["job_id"]
    code, data, _ = cli(slurm_target, capsys, "submit-job", "-j", job_file(slurm_target, tmp_path, tag + "l", "sleep 300"))
    long = data["job_id"]

    code, data, _ = cli(slurm_target, capsys, "list-jobs")
    assert code == 0 and {failing, long} <= {j["job_id"] for j in data["jobs"]}
    code, data, _ = cli(slurm_target, capsys, "list-jobs", "--format", "table")
    assert data.splitlines()[0].split()[:3] == ["JOB_ID", "NAME", "STATE"]

    code, data, _ = cli(slurm_target, capsys, "cancel-job", "-j", str(long))
    assert code == 0 and data == {"job_id": long, "cancelled": True}

    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        code, data, _ = cli(slurm_target, capsys, "describe-job", "-j", str(failing))
        if data["is_final"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (data["state"], data["exit_code"], data["comment"]) == ("FAILED", 3, f"cli-test {tag}")
    assert data["end_time"].endswith("+00:00")


def test_errors_exit_non_zero_with_slurms_message(slurm_target: Any, capsys: pytest.CaptureFixture) -> None:
    code, _, err = cli(slurm_target, capsys, "describe-job", "-j", "987654321")
    assert code == 1 and "SlurmNotFoundError" in err and "Invalid job id specified" in err
    code = main(["ping", "--url", slurm_target.url, "--token", "garbage-token-abc", "-u", slurm_target.user,
                 "--api-version", slurm_target.version])
    out, err = capsys.readouterr()
    assert code == 1 and "SlurmAuthError" in err and "garbage-token-abc" not in out + err


def test_installed_entry_point(slurm_target: Any) -> None:
    exe = shutil.which("slurm-trigger", path=str(Path(sys.executable).parent)) or shutil.which("slurm-trigger")
    assert exe, "the slurm-trigger entry point is not installed (pip install -e .)"
    token = slurm_target.token()
    env = {**os.environ, "SLURM_URL": slurm_target.url, "SLURM_TOKEN": token,
           "SLURM_USER": slurm_target.user, "SLURM_API_VERSION": slurm_target.version}
    proc = subprocess.run([exe, "ping", "--format", "table"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:4] == ["HOSTNAME", "STATUS", "MODE", "LATENCY"] and "UP" in proc.stdout
    assert token not in proc.stdout + proc.stderr
