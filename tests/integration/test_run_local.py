"""The README's run command closes the loop: scripts/run-local --ci against every local cluster.

Real Slurm (22.05, 24.11, 26.05 with slurmdbd), moto in server mode, the app's own handlers: every sample
object becomes exactly one job (a repeated notification included), the job finishes,
and its events reach the bus and come back through the example rule's SQS queue.
On the host cluster the state changes also come pushed by its slurmctld through the head node
kit's hook, under the eventIds of the polled copies.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.real_slurm, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_local_closes_the_loop(slurm_clusters, tmp_path: Path):
    if os.geteuid() != 0:
        msg = "scripts/run-local needs root (apt, the local Slurm)"
        pytest.fail(msg) if os.environ.get("CI") == "true" else pytest.skip(msg)
    env = dict(os.environ, MOTO_PORT=str(_free_port()))
    logs = tmp_path / "run-local"
    proc = subprocess.run(
        [str(REPO / "scripts" / "run-local"), "--ci", "--log-dir", str(logs)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=840,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    summaries = {p.stem.removeprefix("summary-"): json.loads(p.read_text()) for p in logs.glob("summary-*.json")}
    assert set(summaries) == set(slurm_clusters), output[-3000:]
    for name, s in summaries.items():
        assert s["closed"], (name, s["problems"])
        expected = [o for o in s["objects"] if o["pipeline"]]
        assert len(expected) >= 3  # both example pipelines, a pair and a single read
        assert {o["pipeline"] for o in expected} == {"align-reads", "forecast-tile", "paired-reads"}
        for o in s["objects"]:
            if o["pipeline"]:
                assert len(o["jobs"]) == 1 and o["final"] == "COMPLETED" and o["submitted_events"] == 1, o
            else:
                assert o["jobs"] == [], o
        changes = s["state_changes"]
        assert changes["ids_per_change_max"] == 1, changes  # pushed and polled copies share one eventId
        if name == "host":  # its slurmctld pushes through the head node kit's hook
            assert s["push"] and changes["pushed"] >= len(expected), changes  # each job's end at least
        else:
            assert changes["pushed"] == 0, changes
