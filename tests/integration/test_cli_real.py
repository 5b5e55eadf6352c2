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
    mine = sorted(int(row.split()[0]) for row in data.splitlines()[1:] if row.split()[1].startswith(f"cli-{tag}"))
    assert mine == sorted([failing, long])  # the table counts what Slurm holds: our two jobs
    code, data, _ = cli(slurm_target, capsys, "get-job", "-j", str(long))  # slurmapi.py's name
    assert code == 0 and data["job_id"] == long and data["name"] == f"cli-{tag}l"

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
    [line] = err.splitlines()  # one line: no JSON dump before it
    assert code == 1 and line.startswith("slurm-trigger: SlurmNotFoundError: ") and "Invalid job id specified" in line
    code = main(["ping", "--url", slurm_target.url, "--token", "garbage-token-abc", "-u", slurm_target.user,
                 "--api-version", slurm_target.version])
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert code == 1 and "SlurmAuthError" in line and "garbage-token-abc" not in out + err


def test_a_rest_version_the_cluster_does_not_serve(slurm_clusters: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    """``--api-version`` that the cluster does not serve says so; it is not "Slurm does
    not know the job" (its 404 is slurmrestd's unknown URL)."""
    from conftest import _token
    from slurm_trigger.slurm.dialects import DIALECTS

    for name, cluster in slurm_clusters.items():
        unserved = next(v for v in reversed(DIALECTS) if v not in cluster["versions"])
        token = _token(name)
        for command in (["ping"], ["list-jobs"], ["describe-job", "-j", "1"]):
            code = main([*command, "--url", cluster["url"], "--token", token, "-u", cluster["user"],
                         "--api-version", unserved])
            out, err = capsys.readouterr()
            [line] = err.splitlines()
            assert code == 1 and out == "" and token not in err, (name, command, err)
            assert f"does not serve GET /slurm/{unserved}/" in line and "slurm-trigger versions" in line, line
            assert "MinJobAge" not in line, line


def installed() -> str:
    exe = shutil.which("slurm-trigger", path=str(Path(sys.executable).parent)) or shutil.which("slurm-trigger")
    assert exe, "the slurm-trigger entry point is not installed (pip install -e .)"
    return exe


def test_output_into_a_closed_pipe(slurm_target: Any) -> None:
    """``slurm-trigger list-jobs | head -1``: the reader leaves early. Quiet, SIGPIPE's status."""
    env = {**os.environ, "SLURM_URL": slurm_target.url, "SLURM_TOKEN": slurm_target.token(),
           "SLURM_USER": slurm_target.user, "SLURM_API_VERSION": slurm_target.version}
    for fmt in ("json", "table"):
        proc = subprocess.Popen([installed(), "list-jobs", "--format", fmt], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout and proc.stderr
        proc.stdout.close()  # gone before the first byte is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141 and err == "", err


def test_ctrl_c_while_waiting_for_slurmrestd(tmp_path: Path) -> None:
    """Ctrl-C during a call that hangs (a head node that accepts and never answers)."""
    import signal
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(120)
        proc = subprocess.Popen(
            [installed(), "list-jobs", "--url", f"http://127.0.0.1:{server.getsockname()[1]}",
             "--token", "eyJhbGciOiJIUzI1NiJ9.e30.abcdefghij", "-u", "alice"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's shell leaves it
        conn, _ = server.accept()  # the CLI is inside its request now
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out, err) == (130, "", "slurm-trigger: interrupted\n")


def test_installed_entry_point(slurm_target: Any) -> None:
    exe = installed()
    token = slurm_target.token()
    env = {**os.environ, "SLURM_URL": slurm_target.url, "SLURM_TOKEN": token,
           "SLURM_USER": slurm_target.user, "SLURM_API_VERSION": slurm_target.version}
    proc = subprocess.run([exe, "ping", "--format", "table"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:4] == ["HOSTNAME", "STATUS", "MODE", "LATENCY"] and "UP" in proc.stdout
    assert token not in proc.stdout + proc.stderr
