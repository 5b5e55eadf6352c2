"""``slurm-trigger status`` from the jobs table (moto): table, JSON, bounded --watch, Ctrl-C."""
from __future__ import annotations

import argparse
import json

import boto3
import pytest

from chalicelib.cli import common_options, tracker_commands
from chalicelib.jobstore import DynamoDBJobStore, TrackedJob, create_table


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    tracker_commands.register(parser.add_subparsers(dest="command", required=True), common_options())
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def table(aws, monkeypatch) -> DynamoDBJobStore:
    db = boto3.client("dynamodb", region_name="us-east-1")
    create_table(db, "cli-jobs")
    monkeypatch.setenv("JOBS_TABLE", "cli-jobs")
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "pc1")
    store = DynamoDBJobStore(db, "cli-jobs")
    store.save_job(TrackedJob("pc1", 12, "FAILED", previous_state="RUNNING", pipeline="align", bucket="in", key="a/b.csv",
                              submitted_at="2026-11-25T04:00:00Z", ended_at="2026-11-25T04:01:00Z", exit_code=3), None)
    store.save_job(TrackedJob("pc1", 11, "RUNNING", previous_state="PENDING", pipeline="align", bucket="in", key="a/a.csv"), None)
    store.save_job(TrackedJob("other", 1, "RUNNING"), None)
    return store


def test_status_table(table, capsys) -> None:
    assert run_cli(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [c.upper() for c in tracker_commands.STATUS_COLUMNS]
    assert lines[1].split()[:5] == ["11", "RUNNING", "PENDING", "align", "s3://in/a/a.csv"]
    assert lines[2].split()[:5] == ["12", "FAILED", "RUNNING", "align", "s3://in/a/b.csv"]
    assert lines[2].split()[-1] == "3" and len(lines) == 3


def test_status_json_and_cluster_flag(table, capsys) -> None:
    assert run_cli(["status", "--format", "json", "-n", "other"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["cluster"], r["job_id"], r["state"]) for r in rows] == [("other", 1, "RUNNING")]


def test_watch_is_bounded_and_clamped(table, capsys, monkeypatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(tracker_commands.time, "sleep", waits.append)
    assert run_cli(["status", "--watch", "0.01", "--times", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("2 job(s), every 1s") == 3
    assert waits == [1.0, 1.0]


def test_watch_stops_cleanly_on_ctrl_c(table, capsys, monkeypatch) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tracker_commands.time, "sleep", interrupt)
    assert run_cli(["status", "--watch"]) == 0
    out = capsys.readouterr().out
    assert "every 5s" in out and "Traceback" not in out


def test_long_keys_are_shortened_in_the_table_only(table, capsys) -> None:
    key = "deep/" * 60 + "x.csv"
    table.save_job(TrackedJob("pc1", 13, "PENDING", bucket="in", key=key), None)
    run_cli(["status"])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "…" in line and line.split()[-1] == "-" and len(line) < 250
    run_cli(["status", "--format", "json"])
    assert json.loads(capsys.readouterr().out)[-1]["s3_uri"] == f"s3://in/{key}"
