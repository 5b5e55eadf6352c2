"""Nothing lost on any route (issue 8): app.py's handlers behind Lambda's own semantics
(tests/lambda_semantics.py), moto for AWS, and the REAL local Slurm, where every count is
taken: the jobs whose comment carries the object's idempotency key.

* A partial SQS batch on each route's configuration: `chalice package` with
  infra/chalice-merge-sqs.yaml (the mapping reports item failures, and the handler is told
  so by the same file) and `chalice deploy` (it cannot, and the handler fails closed).
  The failed records come back and every object ends with exactly one job.
* A head-node outage longer than the async routes' retries: the events land in the async
  DLQ as Lambda destination records and EventBridge dead letters (and the sqs route's DLQ
  holds its notification); `slurm-trigger redrive` keeps them while Slurm is still down,
  makes exactly one job each once it is back, and none when run again.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import socket
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from cfnlint.decode import decode

import slurm_trigger_cli as cli
from slurm_trigger.idempotency import create_table, idempotency_key
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
from lambda_semantics import SqsMapping, eventbridge_dead_letter, invoke_async  # noqa: I001 - tests/

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
CLUSTER = "routes-test"
BUCKET = "routes-input"
PIPELINE = "routes"


def merge_resource(name: str, logical: str) -> dict[str, Any]:
    template, errors = decode(str(REPO / "infra" / name))
    assert not errors
    return template["Resources"][logical]["Properties"]


def sqs_route(route: str) -> tuple[dict[str, str], bool]:
    """(what the route adds to the function's environment, whether its mapping reports
    item failures), read from the deployment files themselves."""
    if route == "chalice-package":
        fn = merge_resource("chalice-merge-sqs.yaml", "OnQueueMessage")
        types = fn["Events"]["OnQueueMessageSqsEventSource"]["Properties"]["FunctionResponseTypes"]
        return dict(fn["Environment"]["Variables"]), "ReportBatchItemFailures" in types
    if route == "chalice-deploy":  # Chalice 1.34 sets no FunctionResponseTypes (test_infra)
        return {}, False
    if route == "misconfigured":  # a handler that reports on a mapping that ignores it: the old bug
        return {"SQS_REPORT_BATCH_ITEM_FAILURES": "true"}, False
    raise ValueError(route)


def closed_port_url() -> str:
    """A loopback URL where nothing listens: every connection is refused (a head node down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def notification(key: str, version: str) -> dict[str, Any]:
    event = json.loads((EVENTS / "s3-put-versioned.json").read_text())
    obj = event["Records"][0]["s3"]["object"]
    event["Records"][0]["s3"]["bucket"].update(name=BUCKET, arn=f"arn:aws:s3:::{BUCKET}")
    obj.update(key=quote_plus(key, safe="/"), versionId=version)
    return event


def object_created(key: str, version: str) -> dict[str, Any]:
    event = json.loads((EVENTS / "eventbridge-object-created.json").read_text())
    event.update(id=str(uuid.uuid4()), resources=[f"arn:aws:s3:::{BUCKET}"])
    event["detail"]["bucket"]["name"] = BUCKET
    event["detail"]["object"].update({"key": key, "version-id": version})
    return event


@dataclasses.dataclass
class Stage:
    """A deployed stage: its app module, queues, and the Slurm the jobs are counted in."""

    module: Any
    sqs: Any
    queues: dict[str, str]
    slurm: Any  # a client of the real cluster
    env: dict[str, str]
    run: str  # unique per test: keys and versions carry it

    def ref(self, name: str) -> ObjectRef:
        return ObjectRef(BUCKET, f"routes/{self.run}/{name}", version_id=f"v-{self.run}-{name}")

    def jobs(self, name: str) -> int:
        """Jobs in Slurm for this object: the count that matters."""
        return len(self.slurm.find_jobs_by_comment(idempotency_key(PIPELINE, self.ref(name))))

    def visible(self, queue: str) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queues[queue], AttributeNames=["All"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def stage(aws, slurm_target, tmp_path, monkeypatch):
    def deploy(route_env: dict[str, str], slurm_url: str, max_receive: int = 5) -> Stage:
        folder = tmp_path / "pipelines"
        folder.mkdir(exist_ok=True)
        (folder / "routes.yaml").write_text(
            f"name: {PIPELINE}\nmatch: {{prefix: routes/}}\njob:\n"
            "  script: \"#!/bin/bash\\ntrue\\n\"\n  partition: debug\n"
            f"  working_directory: {slurm_target.workdir}\n  standard_output: /dev/null\n"
            "  environment: {PATH: /usr/bin:/bin}\n  time_limit: 1\n  comment: routes test\n"
        )
        env = {
            "SUBSCRIPTIONS": "s3,sqs,eventbridge",
            "INPUT_BUCKET": BUCKET,
            "INPUT_QUEUE": "input",
            "SLURM_CLUSTER_NAME": CLUSTER,
            "SLURM_URL": slurm_url,
            "SLURM_USER": slurm_target.user,
            "SLURM_API_VERSION": slurm_target.version,
            "SLURM_RETRIES": "1",
            "PIPELINES_PATH": str(folder),
            "IDEMPOTENCY_TABLE": "idem",
            "EVENT_BUS_NAME": "default",
            "POWERTOOLS_TRACE_DISABLED": "true",
            **route_env,
        }
        monkeypatch.delenv("SQS_REPORT_BATCH_ITEM_FAILURES", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        secrets = boto3.client("secretsmanager")
        if not secrets.list_secrets()["SecretList"]:
            secrets.create_secret(Name=f"slurm_token_{CLUSTER}", SecretString=slurm_target.token())
            create_table(boto3.client("dynamodb"), "idem")
        sqs = boto3.client("sqs")
        queues = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("input-dlq", "async-dlq")}
        dlq_arn = sqs.get_queue_attributes(QueueUrl=queues["input-dlq"], AttributeNames=["QueueArn"])
        redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": str(max_receive)}
        queues["input"] = sqs.create_queue(QueueName="input", Attributes={"RedrivePolicy": json.dumps(redrive)})[
            "QueueUrl"]
        monkeypatch.syspath_prepend(str(REPO))
        sys.modules.pop("app", None)
        module = importlib.import_module("app")
        monkeypatch.setitem(sys.modules, "app", module)
        real = dataclasses.replace(Settings.from_env(), slurm_url=slurm_target.url)
        return Stage(module, sqs, queues, build_client(real, secrets_client=secrets), env, uuid.uuid4().hex[:12])

    return deploy


class RefusedFor:
    """The trigger's client, except that the first submit of each named object goes to a
    closed port: a real refused connection, through the real client and claim path."""

    def __init__(self, real: Any, keys: set[str]) -> None:
        self.real = real
        self.keys = set(keys)
        settings = dataclasses.replace(Settings.from_env(), slurm_url=closed_port_url())
        self.down = build_client(settings, secrets_client=boto3.client("secretsmanager"))

    def submit(self, job: Any) -> Any:
        hit = next((k for k in self.keys if k in (job.comment or "")), None)
        if hit is None:
            return self.real.submit(job)
        self.keys.discard(hit)
        return self.down.submit(job)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("route", ["chalice-package", "chalice-deploy", "misconfigured"])
def test_partial_batch_loses_nothing(stage, slurm_target, route):
    route_env, reports = sqs_route(route)
    st = stage(route_env, slurm_target.url)
    names = ["a", "b", "c", "d"]
    unlucky = {"b", "d"}
    for name in names:
        ref = st.ref(name)
        st.sqs.send_message(QueueUrl=st.queues["input"], MessageBody=json.dumps(notification(ref.key, ref.version_id)))
    trigger = st.module._trigger()
    trigger.client = RefusedFor(trigger.client, {idempotency_key(PIPELINE, st.ref(n)) for n in unlucky})

    polls = SqsMapping(st.sqs, st.queues["input"], st.module.on_queue_message, reports).drain()

    counts = {name: st.jobs(name) for name in names}
    if route == "misconfigured":  # Lambda deleted the batch it was told had failures
        assert (polls[0].received, polls[0].deleted, polls[0].raised) == (4, 4, False)
        assert counts == {"a": 1, "b": 0, "c": 1, "d": 0}
        return
    first, again = polls[0], polls[1]
    assert first.received == 4 and first.raised is not reports
    # reporting: only b and d come back; failing closed: all four, a and c as duplicates
    assert (first.deleted, again.received) == ((2, 2) if reports else (0, 4))
    assert counts == dict.fromkeys(names, 1), counts
    assert st.visible("input") == 0 and st.visible("input-dlq") == 0


@pytest.mark.parametrize("route", ["chalice-package", "chalice-deploy"])
def test_unreadable_message_ends_in_the_dlq(stage, slurm_target, route, capsys):
    """Fail closed drags the batch-mates of a message that never reads into the DLQ too:
    nothing is lost, and redrive counts them as the duplicates they are."""
    route_env, reports = sqs_route(route)
    st = stage(route_env, slurm_target.url, max_receive=2)
    ref = st.ref("mate")
    for body in (json.dumps(notification(ref.key, ref.version_id)), '{"Records": [{"eventName": "ObjectCreated:Put"}]}'):
        st.sqs.send_message(QueueUrl=st.queues["input"], MessageBody=body)
    SqsMapping(st.sqs, st.queues["input"], st.module.on_queue_message, reports).drain()
    assert st.jobs("mate") == 1
    assert st.visible("input") == 0 and st.visible("input-dlq") == (1 if reports else 2)

    capsys.readouterr()  # the handler's metrics (EMF lines)
    assert cli.main(["redrive", "--queue", st.queues["input-dlq"]]) == 1  # the unreadable one stays
    out = json.loads(capsys.readouterr().out)
    assert (out["kept"], out["submitted"], out["duplicates"]) == (1, 0, 0 if reports else 1)
    assert out["kept_messages"][0]["reason"].startswith("unreadable")
    assert st.jobs("mate") == 1 and st.visible("input-dlq") == 1


def test_head_node_outage_lands_in_dlqs_and_redrive_submits_once(stage, slurm_target, capsys, monkeypatch):
    st = stage({}, closed_port_url())
    sqs, dlq = st.sqs, st.queues["async-dlq"]
    eventbridge = merge_resource("chalice-merge-eventbridge.yaml", "OnObjectEvent")["EventInvokeConfig"]
    template, _ = decode(str(REPO / "infra" / "chalice-deploy-on-failure.yaml"))
    s3_retries = int(template["Parameters"]["MaximumRetryAttempts"]["Default"])

    def event(name: str, shape: Any) -> dict[str, Any]:
        return shape(st.ref(name).key, st.ref(name).version_id)

    # eventbridge route: "a" delivered twice (EventBridge is at least once), both exhaust their retries
    a = event("a", object_created)
    for delivery in (a, copy.deepcopy(a)):
        assert invoke_async(st.module.on_object_event, delivery, function="slurm-trigger-dev-on_object_event",
                            retries=eventbridge["MaximumRetryAttempts"], sqs=sqs, on_failure_url=dlq) is None
    # direct s3 route: "b"
    assert invoke_async(st.module.on_object_created, event("b", notification),
                        function="slurm-trigger-dev-on_object_created", retries=s3_retries, sqs=sqs,
                        on_failure_url=dlq) is None
    # EventBridge could not invoke the function at all: "c" in the rule target's DLQ
    sqs.send_message(QueueUrl=dlq, **eventbridge_dead_letter(event("c", object_created),
                                                             "slurm-trigger-dev-on_object_event",
                                                             "slurm-trigger-dev-on_object_event"))
    # sqs route: "d"'s notification went through its receives and into the input DLQ
    sqs.send_message(QueueUrl=st.queues["input-dlq"], MessageBody=json.dumps(event("d", notification)))
    names = ["a", "b", "c", "d"]
    assert {n: st.jobs(n) for n in names} == dict.fromkeys(names, 0)
    assert (st.visible("async-dlq"), st.visible("input-dlq")) == (4, 1)

    redrive = ["redrive", "--queue", dlq, "--queue", "input-dlq"]
    capsys.readouterr()  # the handlers' metrics (EMF lines)
    # still down: nothing is deleted
    assert cli.main(redrive) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["messages"], out["deleted"], out["kept"], out["transient"]) == (5, 0, 5, 5)
    assert (st.visible("async-dlq"), st.visible("input-dlq")) == (4, 1)

    monkeypatch.setenv("SLURM_URL", slurm_target.url)  # the head node is back
    assert cli.main(redrive) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["messages"], out["deleted"], out["kept"]) == (5, 5, 0)
    assert (out["submitted"], out["duplicates"], out["failed"]) == (4, 1, 0)
    assert {n: st.jobs(n) for n in names} == dict.fromkeys(names, 1)

    assert cli.main(redrive) == 0  # twice: nothing left, nothing new
    out = json.loads(capsys.readouterr().out)
    assert (out["messages"], out["submitted"]) == (0, 0)
    assert {n: st.jobs(n) for n in names} == dict.fromkeys(names, 1)
    assert (st.visible("async-dlq"), st.visible("input-dlq")) == (0, 0)
