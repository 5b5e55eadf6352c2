"""The three subscriptions through app.py's handlers (``chalice.test.Client``), fed the
real-shaped events in ``events/``, with the shipped pipelines, moto for AWS and the
REAL local Slurm: the example jobs must run there."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client

from slurm_trigger.idempotency import create_table
from test_trigger import wait_final  # noqa: I001 - same folder

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
CLUSTER = "app-test"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def import_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """app.py as Lambda (or `chalice deploy`) imports it: settings from the environment."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    monkeypatch.setitem(sys.modules, "app", module)
    return module


@pytest.fixture
def deployed(aws, slurm_target, tmp_path, monkeypatch):
    """A stage with all three subscriptions, its environment in a Chalice config."""
    env = {
        "SUBSCRIPTIONS": "s3,sqs,eventbridge",
        "INPUT_BUCKET": "sequencer-runs",
        "INPUT_QUEUE": "input",
        # as infra/chalice-merge-sqs.yaml sets it (both routes: tests/integration/test_routes.py)
        "SQS_REPORT_BATCH_ITEM_FAILURES": "true",
        "SLURM_CLUSTER_NAME": CLUSTER,
        "SLURM_URL": slurm_target.url,
        "SLURM_USER": slurm_target.user,
        "SLURM_API_VERSION": slurm_target.version,
        "SLURM_SCHEME": "http",
        "PIPELINES_PATH": str(REPO / "pipelines"),
        "IDEMPOTENCY_TABLE": "idem",
        "EVENT_BUS_NAME": "default",
        "EVENT_SOURCE": "slurm-trigger",
        "POWERTOOLS_METRICS_NAMESPACE": "SlurmTrigger",
    }
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(
        json.dumps({"version": "2.0", "app_name": "slurm-trigger", "stages": {"test": {"environment_variables": env}}})
    )
    boto3.client("secretsmanager").create_secret(Name=f"slurm_token_{CLUSTER}", SecretString=slurm_target.token())
    create_table(boto3.client("dynamodb"), "idem")
    module = import_app(monkeypatch, **env)
    with Client(module.app, stage_name="test", project_dir=str(tmp_path)) as client:
        yield client, slurm_target, module


def tile_notification() -> dict:
    """The versioned PUT sample with its (URL-encoded) key moved under tiles/."""
    event = sample("s3-put-versioned.json")
    event["Records"][0]["s3"]["object"]["key"] = "tiles/run+42/sample%2B1.tif"
    return event


def test_direct_notification_runs_the_forecast_example(deployed):
    client, target, module = deployed
    [out] = client.lambda_.invoke("on_object_created", tile_notification()).payload
    assert out["status"] == "submitted" and out["pipeline"] == "forecast-tile"
    assert out["key"] == "tiles/run 42/sample+1.tif"  # URL-decoded
    job = wait_final(module._trigger().client, out["job_id"])
    assert job.state == "COMPLETED", job
    log = target.host_path(f"/tmp/slurm-trigger-jobs/forecast-sample_1-{out['job_id']}.out").read_text()
    assert "forecast written for s3://sequencer-runs/tiles/run 42/sample+1.tif" in log
    # S3 delivers at least once: the same notification again is a duplicate
    [again] = client.lambda_.invoke("on_object_created", tile_notification()).payload
    assert again["status"] == "duplicate" and again["job_id"] == out["job_id"]


def test_eventbridge_event_runs_the_forecast_example(deployed):
    client, target, module = deployed
    [out] = client.lambda_.invoke("on_object_event", sample("eventbridge-object-created.json")).payload
    assert out["pipeline"] == "forecast-tile" and out["key"] == "tiles/2026/11/25/T33 UVP+north.tif"
    assert wait_final(module._trigger().client, out["job_id"]).state == "COMPLETED"
    log = target.host_path(f"/tmp/slurm-trigger-jobs/forecast-T33_UVP_north-{out['job_id']}.out").read_text()
    assert "forecast written for s3://satellite-tiles/tiles/2026/11/25/T33 UVP+north.tif" in log


def test_test_event_is_ignored(deployed):
    """S3 sends s3:TestEvent to a queue when the notification is set up (never to a
    Lambda directly)."""
    client, _, _ = deployed
    event = client.events.generate_sqs_event(message_bodies=[json.dumps(sample("s3-test-event.json"))])
    assert client.lambda_.invoke("on_queue_message", event).payload == {"batchItemFailures": []}


def test_sqs_batch_with_a_broken_message(deployed):
    client, _, module = deployed
    event = sample("sqs-batch.json")
    broken = dict(event["Records"][0], messageId="broken-one", body='{"Records": [{"eventName": "ObjectCreated:Put"}]}')
    event["Records"].insert(2, broken)
    answer = client.lambda_.invoke("on_queue_message", event).payload
    assert answer == {"batchItemFailures": [{"itemIdentifier": "broken-one"}]}
    keys = ["tiles/2026/11/25/T31 \u00e9t\u00e9.tif"]  # the reads match no pipeline since align-reads was retired
    trigger = module._trigger()
    jobs = [j for j in trigger.client.list_jobs().jobs if j.comment and "slurm-trigger:" in j.comment]
    from slurm_trigger.provenance import decode

    sources = [decode(j.comment) for j in jobs]  # other tests' jobs share the cluster
    ours = sorted(s.key for s in sources if s is not None and s.version_id in {"v-a", "v-b", "v-c"})
    assert sorted(set(ours)) == sorted(keys)
    # generated by chalice's own test helper: a body that is an S3 notification
    again = client.events.generate_sqs_event(message_bodies=[event["Records"][0]["body"]], queue_name="input")
    assert client.lambda_.invoke("on_queue_message", again).payload == {"batchItemFailures": []}


def test_only_configured_subscriptions_are_registered(monkeypatch):
    module = import_app(monkeypatch, SUBSCRIPTIONS="sqs", INPUT_QUEUE="q")
    assert hasattr(module, "on_queue_message")
    assert not hasattr(module, "on_object_created") and not hasattr(module, "on_object_event")
    monkeypatch.setenv("SUBSCRIPTIONS", "s3,sns")
    with pytest.raises(ValueError, match="SUBSCRIPTIONS"):
        import_app(monkeypatch)
    monkeypatch.setenv("SUBSCRIPTIONS", "eventbridge")
    monkeypatch.delenv("INPUT_BUCKET", raising=False)
    with pytest.raises(ValueError, match="INPUT_BUCKET"):
        import_app(monkeypatch)
