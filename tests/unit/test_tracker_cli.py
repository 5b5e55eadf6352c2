"""``slurm-trigger status`` from the jobs table (moto): table, JSON, bounded --watch, Ctrl-C."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3
import pytest

from slurm_trigger import setstore
from slurm_trigger_cli import common_options, tracker_commands
from slurm_trigger.jobstore import DynamoDBJobStore, TrackedJob, create_table

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


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


@pytest.fixture
def sets(aws, monkeypatch):
    """Sets in every state, in moto; the shipped pipelines say what a pair lacks."""
    db = boto3.client("dynamodb", region_name="us-east-1")
    setstore.create_table(db, "cli-sets")
    monkeypatch.setenv("SETS_TABLE", "cli-sets")
    monkeypatch.setenv("PIPELINES_PATH", str(PIPELINES))
    now = [1_796_119_200]  # 2026-12-01T10:00:00Z
    store = setstore.DynamoDBSetStore(db, "cli-sets", clock=lambda: now[0])
    pair = setstore.Where("pair-1", "paired-reads", "seq", "fastq/run1/s1_L001", span=6 * 3600)
    store.add(pair, "R1", setstore.Member("fastq/run1/s1_S1_L001_R1_001.fastq.gz", "v1"))
    store.add(setstore.Where("open-no-deadline", "other", "b", "folder/x", span=None), "a", setstore.Member("folder/x/a"))
    now[0] -= 60  # an older set, due sooner
    late = setstore.Where("reported-1", "paired-reads", "seq", "fastq/run0/s9_L002", span=60)
    store.add(late, "R2", setstore.Member("fastq/run0/s9_S9_L002_R2_001.fastq.gz"))
    store.reported("reported-1")
    done = setstore.Where("fired-1", "paired-reads", "seq", "fastq/run1/s2_L001", span=60)
    for read in ("R1", "R2"):
        store.add(done, read, setstore.Member(f"fastq/run1/s2_S2_L001_{read}_001.fastq.gz"))
    store.close("fired-1", redrive_after=90)
    store.finished("fired-1", 77)
    return store


def test_status_sets_lists_the_waiting_sets_with_their_deadlines(sets, capsys) -> None:
    assert [s.set_id for s in sets.waiting(10)] == ["pair-1", "reported-1", "open-no-deadline"]  # no deadline last, oldest first
    assert run_cli(["status", "--sets", "--format", "json"]) == 0
    rows = {r["idempotency_key"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"pair-1", "open-no-deadline", "reported-1"}  # not the set that fired
    pair = rows["pair-1"]
    assert (pair["set"], pair["members"], pair["missing"]) == ("fastq/run1/s1_L001", ["R1"], ["R2"])
    assert (pair["first_at"], pair["deadline"], pair["reported_at"]) == ("2026-12-01T10:00:00Z", "2026-12-01T16:00:00Z", None)
    assert rows["reported-1"]["deadline"] is None and rows["reported-1"]["reported_at"] == "2026-12-01T09:59:00Z"
    assert rows["reported-1"]["missing"] == ["R1"]
    assert rows["open-no-deadline"]["missing"] is None  # its pipeline is not here: unknown, not "nothing"

    assert run_cli(["status", "--sets"]) == 0  # table is the default
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [c.upper() for c in tracker_commands.SET_COLUMNS]
    assert lines[1].split() == ["paired-reads", "fastq/run1/s1_L001", "1", "R2", "2026-12-01T10:00:00Z", "2026-12-01T16:00:00Z", "-"]
    assert lines[2].split() == ["paired-reads", "fastq/run0/s9_L002", "1", "R1", "2026-12-01T09:59:00Z", "-", "2026-12-01T09:59:00Z"]
    assert len(lines) == 4

    assert run_cli(["status", "--sets", "--limit", "2", "--format", "json"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 2 and "more may wait (--limit)" in out.err
