"""The trigger end to end: moto for AWS, the REAL local Slurm for jobs.

Jobs are counted through Slurm's REST API (jobs whose comment carries the idempotency
key), never through our own idempotency table.
"""
from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
from atomic_dynamodb import AtomicDynamoDB  # sibling helper module
import pytest

from slurm_trigger.idempotency import create_table, idempotency_key
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.settings import Settings
from slurm_trigger.trigger import Trigger, build_trigger, render_job

pytestmark = pytest.mark.real_slurm

CLUSTER = "trigger-test"
TABLE = "trigger-idempotency"
SOURCE = "slurm-trigger"


@dataclass
class World:
    """One test's AWS (moto) and Slurm, and the trigger built from them."""

    target: Any
    settings: Settings
    trigger: Trigger
    sqs: Any
    events_queue: str
    outdir: str  # a fresh directory in the job's view

    def refetch_trigger(self) -> Trigger:
        """Another Lambda container: same table, new clients."""
        return build_trigger(self.settings, **_clients())

    def events(self) -> list[dict[str, Any]]:
        """Every event the trigger published (EventBridge rule → SQS)."""
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.events_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return out
            out += [json.loads(m["Body"]) for m in got]

    def jobs_with(self, key: str) -> list[Any]:
        return self.trigger.client.find_jobs_by_comment(key)

    def wait_final(self, job_id: int) -> Any:
        return wait_final(self.trigger.client, job_id)

    def read(self, name: str) -> str:
        return self.target.host_path(f"{self.outdir}/{name}").read_text(encoding="utf-8")

    def exists(self, name: str) -> bool:
        return self.target.host_path(f"{self.outdir}/{name}").exists()


def wait_final(client: Any, job_id: int, limit: float = 180) -> Any:
    """The job once it ended (or as it is after ``limit`` seconds: the test then fails
    on its state, not on time)."""
    deadline = time.monotonic() + limit
    while True:
        job = client.get_job(job_id)
        if job.is_final or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _clients() -> dict[str, Any]:
    return {
        "dynamodb_client": AtomicDynamoDB(boto3.client("dynamodb")),
        "events_client": boto3.client("events"),
        "s3_client": boto3.client("s3"),
        "secrets_client": boto3.client("secretsmanager"),
    }


PIPELINE = """
name: echo
match: {prefix: "in/"}
job:
  name: echo-${basename}
  script: |
    #!/bin/bash
    printf '%s' "$SLURM_TRIGGER_KEY" > "$OUT_DIR/env-$SLURM_JOB_ID"
    printf '%s' ${key} > "$OUT_DIR/script-$SLURM_JOB_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: WORKDIR/echo-%j.out
  environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
  time_limit: 2
  comment: echo test
"""

TRUE_PIPELINE = """
name: trivial
match: {prefix: "many/"}
job:
  script: "#!/bin/bash\\ntrue\\n"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/bin:/bin}
  time_limit: 1
"""


def make_world(target: Any, tmp_path: Path, *pipelines: str, suffix: str = "") -> World:
    """One world's AWS resources; ``suffix`` names another set, for several in one test."""
    outdir = f"{target.workdir}/trigger-{uuid.uuid4().hex[:12]}"
    target.host_path(outdir).mkdir(mode=0o777)
    target.host_path(outdir).chmod(0o777)  # the chroot's job user is not root
    folder = tmp_path / "pipelines"
    folder.mkdir(parents=True)
    for i, text in enumerate(pipelines):
        text = text.replace("WORKDIR", target.workdir).replace("OUTDIR", outdir)
        (folder / f"p{i}.yaml").write_text(textwrap.dedent(text))
    cluster, table = CLUSTER + suffix, TABLE + suffix
    boto3.client("secretsmanager").create_secret(Name=f"slurm_token_{cluster}", SecretString=target.token())
    create_table(boto3.client("dynamodb"), table)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="events" + suffix)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="all" + suffix, EventPattern=json.dumps({"source": [SOURCE], "detail": {"cluster": [cluster]}}))
    events.put_targets(Rule="all" + suffix, Targets=[{"Id": "q", "Arn": arn}])
    settings = Settings(
        cluster_name=cluster,
        slurm_url=target.url,
        slurm_user=target.user,
        api_version=target.version,
        slurm_scheme="http",
        pipelines_path=str(folder),
        idempotency_table=table,
        event_source=SOURCE,
        read_timeout=10,
    )
    return World(target, settings, build_trigger(settings, **_clients()), sqs, queue, outdir)


def obj(key: str, version: str | None = None) -> ObjectRef:
    return ObjectRef("bkt", key, size=3, etag="etag1", version_id=version or uuid.uuid4().hex, sequencer="00A1")


def notification(ref: ObjectRef) -> dict[str, Any]:
    """A direct S3 notification for ``ref`` (key URL-encoded as S3 does)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-25T04:10:02.311Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": ref.bucket, "arn": f"arn:aws:s3:::{ref.bucket}"},
                    "object": {
                        "key": quote_plus(ref.key, safe="/"),
                        "size": ref.size,
                        "eTag": ref.etag,
                        "versionId": ref.version_id,
                        "sequencer": ref.sequencer,
                    },
                },
            }
        ]
    }


@pytest.fixture
def world(aws, slurm_target, tmp_path) -> World:
    return make_world(slurm_target, tmp_path, PIPELINE, TRUE_PIPELINE)


def test_redelivered_five_times_in_a_row_makes_one_job(world):
    ref = obj("many/a.txt")
    outcomes = [world.trigger.handle_event(notification(ref))[0] for _ in range(5)]
    assert [o.status for o in outcomes] == ["submitted"] + ["duplicate"] * 4
    assert len({o.job_id for o in outcomes}) == 1
    key = idempotency_key("trivial", ref)
    assert [j.job_id for j in world.jobs_with(key)] == [outcomes[0].job_id]
    submitted = [e for e in world.events() if e["detail-type"] == "Slurm Job Submitted"]
    assert len(submitted) == 1
    detail = submitted[0]["detail"]
    assert detail["jobId"] == outcomes[0].job_id and detail["eventId"] == key
    assert detail["cluster"] == CLUSTER and detail["apiVersion"] == world.target.version
    assert detail["source"]["key"] == "many/a.txt" and detail["source"]["versionId"] == ref.version_id and detail["source"]["pipeline"] == "trivial"


def test_delivered_five_times_concurrently_makes_one_job(world):
    ref = obj("many/b.txt")
    results: list[Any] = [None] * 5
    start = threading.Barrier(5)
    # five Lambda containers: each its own clients, one table
    triggers = [world.refetch_trigger() for _ in range(5)]

    def deliver(i: int) -> None:
        start.wait()
        try:
            results[i] = triggers[i].handle_event(notification(ref))[0].status
        except Exception as exc:  # noqa: BLE001 - the transient "in progress" is expected
            results[i] = exc

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [r if isinstance(r, str) else "retry" for r in results]
    assert statuses.count("submitted") == 1, results
    assert all(getattr(r, "transient", False) for r in results if not isinstance(r, str)), results
    # the retries Lambda/SQS would make
    assert world.trigger.handle_event(notification(ref))[0].status == "duplicate"
    assert len(world.jobs_with(idempotency_key("trivial", ref))) == 1


def test_new_version_is_a_new_job(world):
    first, second = obj("many/c.txt", "v1"), obj("many/c.txt", "v2")
    ids = [world.trigger.handle(r)[0].job_id for r in (first, second, first)]
    assert ids[0] != ids[1] and ids[2] == ids[0]


HOSTILE = [
    "in/$(touch CANARY)",
    "in/`touch CANARY`",
    "in/a; touch CANARY",
    "in/a && touch CANARY",
    "in/it's \"quoted\" \\ back",
    "in/\u00fcnic\u00f8de \u2603 \U0001f600",
    "in/with spaces and+plus%20percent",
    "in/../../etc/passwd",
    "in/" + "k" * 1021,
]


def test_hostile_keys_reach_the_job_intact(world):
    canary = f"{world.outdir}/pwned"
    refs = [obj(k.replace("CANARY", canary)) for k in HOSTILE]
    assert len(refs[-1].key.encode()) == 1024
    jobs = {}
    for ref in refs:
        # through a real-shaped, URL-encoded notification: decoding is part of the path
        [outcome] = world.trigger.handle_event(notification(ref))
        assert outcome.status == "submitted", outcome
        jobs[outcome.job_id] = ref.key
    for job_id, key in jobs.items():
        job = world.wait_final(job_id)
        assert job.state == "COMPLETED", (job, key)
        assert world.read(f"env-{job_id}") == key
        assert world.read(f"script-{job_id}") == key
        assert set(job.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert not world.exists("pwned")


@pytest.mark.parametrize("key", ["in/new\nline", "in/cr\rhere", "in/nul\x00here", "in/del\x7fhere"])
def test_control_characters_are_a_reported_permanent_failure(world, key):
    [outcome] = world.trigger.handle_event(notification(obj(key)))
    assert outcome.status == "failed" and "control character" in outcome.reason
    assert world.jobs_with(outcome.idempotency_key) == []
    [event] = world.events()
    assert event["detail-type"] == "Slurm Job Submission Failed"
    assert event["detail"]["source"]["key"] == key and "control character" in event["detail"]["reason"]


OPTION_PIPELINES = ("""
name: opt-unguarded
match: {prefix: "opt/"}
job:
  script: |
    #!/bin/bash
    cd "$OUT_DIR" && sed -n p ${basename} > "sed-$SLURM_JOB_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
  time_limit: 2
""", """
name: opt-guarded
match: {prefix: "opt/"}
job:
  script: |
    #!/bin/bash
    set -e
    cd "$OUT_DIR"
    printf 'abc\\n' > ./${basename}
    sed -n p -- ${basename} > "sed-$SLURM_JOB_ID"
    perl -pe 's/b/B/' ./${basename} > "perl-$SLURM_JOB_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
  time_limit: 2
""")


def test_a_key_read_as_an_option_is_a_reported_failure_never_a_command(aws, slurm_target, tmp_path):
    """``sed -n p ${basename}`` with the basename ``-e1e touch pwned`` would run touch
    (GNU sed's ``e`` command): that pipeline refuses the object, reported, no job; the
    pipeline that writes ``-- ${basename}`` and ``./${basename}`` gets its job, which
    reads the file byte for byte. Counted in Slurm by each pipeline's key."""
    world = make_world(slurm_target, tmp_path, *OPTION_PIPELINES)
    ref = obj("opt/-e1e touch pwned")
    outcomes = {o.pipeline: o for o in world.trigger.handle_event(notification(ref))}
    refused, made = outcomes["opt-unguarded"], outcomes["opt-guarded"]
    assert refused.status == "failed" and "starts with '-'" in refused.reason and "sed" in refused.reason
    assert world.jobs_with(refused.idempotency_key) == []
    [failed] = [e for e in world.events() if e["detail-type"] == "Slurm Job Submission Failed"]
    assert failed["detail"]["source"]["key"] == ref.key and failed["detail"]["source"]["pipeline"] == "opt-unguarded"
    assert made.status == "submitted" and len(world.jobs_with(made.idempotency_key)) == 1
    assert world.wait_final(made.job_id).state == "COMPLETED"
    assert (world.read(f"sed-{made.job_id}"), world.read(f"perl-{made.job_id}")) == ("abc\n", "aBc\n")
    assert world.read("-e1e touch pwned") == "abc\n" and not world.exists("pwned")


LONG_PIPELINE = """
name: long-names
match: {prefix: "long/"}
job:
  name: long-${stem}
  script: |
    #!/bin/bash
    printf '%s' ${key}
  partition: debug
  working_directory: WORKDIR
  standard_output: OUTDIR/long-${stem}-%j.out
  environment: {PATH: /usr/local/bin:/usr/bin:/bin}
  time_limit: 2
"""


def test_a_1024_byte_key_in_the_output_path_still_runs_its_job(aws, slurm_target, tmp_path):
    """``standard_output: .../long-${stem}-%j.out`` with a 1,000-character stem: the job
    runs and writes its output (it FAILED at once when the file name passed 255 bytes)."""
    world = make_world(slurm_target, tmp_path, LONG_PIPELINE)
    ref = obj("long/" + "k" * 1010 + ".tif")
    assert len(ref.key.encode()) == 1019
    [outcome] = world.trigger.handle_event(notification(ref))
    assert outcome.status == "submitted" and len(world.jobs_with(outcome.idempotency_key)) == 1
    assert world.wait_final(outcome.job_id).state == "COMPLETED"
    [out] = [p for p in world.target.host_path(world.outdir).iterdir() if p.name.startswith("long-")]
    assert out.name.endswith(f"-{outcome.job_id}.out") and out.read_text() == ref.key


def test_rejected_body_is_reported_and_released(world):
    [trivial] = [p for p in world.trigger.pipelines if p.name == "trivial"]
    world.trigger.pipelines = [replace(trivial, template=replace(trivial.template, partition="no-such-partition"))]
    ref = obj("many/rejected")
    [outcome] = world.trigger.handle(ref)
    assert outcome.status == "failed" and "reject" in outcome.reason.lower()
    [event] = world.events()
    assert event["detail-type"] == "Slurm Job Submission Failed"
    assert event["detail"]["error"]["type"] == "SlurmRejectedError" and event["detail"]["source"]["key"] == ref.key
    # released, not kept: once the pipeline is fixed a redelivery submits
    world.trigger.pipelines = [trivial]
    assert world.trigger.handle(ref)[0].status == "submitted"


def test_unmatched_object_is_skipped(world):
    assert [o.status for o in world.trigger.handle(obj("elsewhere/x"))] == ["unmatched"]
    assert world.events() == []


def test_sqs_batch_reports_only_the_broken_message(world):
    refs = [obj(f"many/batch-{i}") for i in range(3)]
    records = [
        {"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": json.dumps(notification(r)), "attributes": {},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"}
        for i, r in enumerate(refs)
    ]
    records.insert(1, {**records[0], "messageId": "broken", "body": "{not json"})
    world.trigger.report_batch_item_failures = True  # the mapping of the `chalice package` route
    answer = world.trigger.handle_sqs({"Records": records})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "broken"}]}
    for r in refs:
        assert len(world.jobs_with(idempotency_key("trivial", r))) == 1


def test_expired_claim_adopts_the_job_slurm_already_has(world):
    """A crash after Slurm accepted the job and before the record was saved."""
    ref = obj("many/crash")
    key = idempotency_key("trivial", ref)
    job = render_job(ref, world.trigger.pipelines[1])
    claim = world.trigger.store.claim(key)
    job_id = world.trigger.client.submit(job).job_id  # ...and the Lambda dies here
    world.trigger.store.expire(claim)  # what the in-progress expiry does with time
    [outcome] = world.refetch_trigger().handle(ref)
    assert (outcome.status, outcome.job_id) == ("adopted", job_id)
    assert len(world.jobs_with(key)) == 1
    assert world.trigger.handle(ref)[0].status == "duplicate"
