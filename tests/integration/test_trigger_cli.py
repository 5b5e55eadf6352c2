"""`slurm-trigger validate | render | backfill`."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from slurm_trigger_cli import main
from slurm_trigger.idempotency import create_table, idempotency_key
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm import build_client
from slurm_trigger.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PIPELINES = str(REPO / "pipelines")


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, object, str]:
    code = main([*argv, "--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_validate_shipped(capsys):
    code, rows, _ = run(capsys, "validate", PIPELINES)
    assert code == 0
    assert [r["pipeline"] for r in rows] == ["forecast-tile", "goes-scan", "illumina-run", "paired-reads"]
    assert {r["pipeline"]: r["collect"] for r in rows}["paired-reads"] == "members R1+R2, deadline 21600s -> job"


def test_validate_reports_every_error(capsys, tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nmatch: {prefix: x}\njob: {script: 'echo ${nope}'}\n")
    (tmp_path / "b.yaml").write_text("name: b\nmatch: {prefix: x}\njob: {script: x, colour: red}\n")
    code, rows, err = run(capsys, "validate", str(tmp_path))
    assert code == 1 and len(rows) == 2 and not any(r["ok"] for r in rows)
    assert "${nope}" in err and "colour" in err and "a.yaml" in err and "b.yaml" in err


def test_render_without_a_cluster(capsys, monkeypatch):
    monkeypatch.delenv("SLURM_URL", raising=False)
    key = "tiles/run 1/$(id)_T1.tif"
    code, out, _ = run(capsys, "render", f"s3://seq/{key}", "--size", "10", "--version-id", "v9",
                       "--api-version", "v0.0.40", "--pipelines", PIPELINES)
    assert code == 0
    [item] = out
    assert item["pipeline"] == "forecast-tile" and item["api_version"] == "v0.0.40"
    assert item["idempotency_key"] == idempotency_key("forecast-tile", ObjectRef("seq", key, version_id="v9"))
    job = item["body"]["job"]
    assert f"SLURM_TRIGGER_KEY={key}" in job["environment"]  # v0.0.40: a list of K=V
    assert job["name"] == "forecast-__id__T1" and item["idempotency_key"] in job["comment"]


def test_render_unmatched_exits_1(capsys):
    code, out, err = run(capsys, "render", "s3://seq/other/x", "--api-version", "v0.0.38", "--pipelines", PIPELINES)
    assert code == 1 and out == [] and "matches no pipeline" in err


def test_render_needs_an_s3_uri(capsys):
    assert main(["render", "seq/x", "--api-version", "v0.0.38"]) == 2


def test_backfill_submits_once(aws, slurm_target, capsys, monkeypatch, tmp_path):
    cluster = "backfill-test"
    for k, v in {
        "SLURM_CLUSTER_NAME": cluster, "SLURM_URL": slurm_target.url, "SLURM_USER": slurm_target.user,
        "SLURM_API_VERSION": slurm_target.version, "SLURM_SCHEME": "http", "IDEMPOTENCY_TABLE": "idem",
        "EVENT_SOURCE": "slurm-trigger",
    }.items():
        monkeypatch.setenv(k, v)
    boto3.client("secretsmanager").create_secret(Name=f"slurm_token_{cluster}", SecretString=slurm_target.token())
    create_table(boto3.client("dynamodb"), "idem")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="seq")
    s3.put_bucket_versioning(Bucket="seq", VersioningConfiguration={"Status": "Enabled"})
    keys = ["tiles/r1/a.tif", "tiles/r1/a.tif.aux.xml", "tiles/r1/b.tif", "tiles/notes.txt"]
    for k in keys:
        s3.put_object(Bucket="seq", Key=k, Body=b"ACGT")
    s3.put_object(Bucket="seq", Key="other/ignored-by-prefix.tif", Body=b"x")

    code, summary, err = run(capsys, "backfill", "s3://seq/tiles/", "--pipelines", PIPELINES)
    assert code == 0, err
    assert {k: summary[k] for k in ("objects", "submitted", "duplicates", "unmatched", "failed")} == {
        "objects": 4, "submitted": 2, "duplicates": 0, "unmatched": 2, "failed": 0}
    assert "4/4" in err  # the progress bar

    code, summary, _ = run(capsys, "backfill", "s3://seq/tiles/", "--pipelines", PIPELINES)
    assert (code, summary["submitted"], summary["duplicates"]) == (0, 0, 2)

    client = build_client(Settings.from_env())
    for k in ("tiles/r1/a.tif", "tiles/r1/b.tif"):
        version = s3.head_object(Bucket="seq", Key=k)["VersionId"]
        key = idempotency_key("forecast-tile", ObjectRef("seq", k, version_id=version))
        assert len(client.find_jobs_by_comment(key)) == 1
