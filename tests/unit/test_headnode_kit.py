"""The head node kit's pieces that need no Slurm: its bundle, its hook's events, its pusher.

The kit end to end (real Slurm, nginx, TLS) is tests/integration/test_headnode.py.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import jsonschema
import pytest

from slurm_trigger import jobevents, provenance
from slurm_trigger.jobstore import TrackedJob
from slurm_trigger.provenance import Source
from slurm_trigger.tracker import resources, state_change_detail

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "headnode"
SCHEMA = json.loads((REPO / "schemas" / "slurm-job-state-change.schema.json").read_text())
spec = importlib.util.spec_from_file_location("slurm_trigger_headnode", KIT / "lib" / "slurm_trigger_headnode.py")
hn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hn)  # type: ignore[union-attr]


def test_the_bundle_ships_chalicelibs_own_event_id_and_provenance(tmp_path: Path) -> None:
    """One place for eventId: lib/ links to slurm_trigger, the bundle holds the files themselves."""
    assert (KIT / "lib" / "slurm_trigger_jobevents.py").resolve() == REPO / "slurm_trigger" / "jobevents.py"
    assert (KIT / "lib" / "slurm_trigger_provenance.py").resolve() == REPO / "slurm_trigger" / "provenance.py"
    out = subprocess.run([str(KIT / "build"), str(tmp_path)], capture_output=True, text=True, check=True,
                         env={"KIT_VERSION": "9.9.9-test", "PATH": "/usr/bin:/bin"}).stdout.strip()
    bundle = Path(out)
    assert bundle.name == "slurm-trigger-headnode-9.9.9-test.sh"
    data = bundle.read_bytes()
    payload = data[data.index(b"\n__KIT__\n") + len(b"\n__KIT__\n"):]
    (tmp_path / "kit.tgz").write_bytes(payload)
    with tarfile.open(tmp_path / "kit.tgz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    x = tmp_path / "x"
    assert (x / "lib" / "slurm_trigger_jobevents.py").read_text() == (REPO / "slurm_trigger" / "jobevents.py").read_text()
    assert (x / "lib" / "slurm_trigger_provenance.py").read_text() == (REPO / "slurm_trigger" / "provenance.py").read_text()
    assert not (x / "lib" / "slurm_trigger_jobevents.py").is_symlink()
    assert (x / "VERSION").read_text().strip() == "9.9.9-test"
    help_text = subprocess.run(["bash", str(bundle), "--help"], capture_output=True, text=True, check=True).stdout
    assert "OnNodeConfigured" in help_text


def test_the_kit_pins_the_same_boto3_as_the_functions() -> None:
    def pins(path: Path) -> dict[str, str]:
        return dict(line.split("==") for line in path.read_text().splitlines()
                    if "==" in line and not line.startswith("#") and line.split("==")[0] in ("boto3", "botocore"))

    assert pins(KIT / "requirements.txt") == pins(REPO / "requirements.txt")


def fake_scontrol(tmp_path: Path, fields: str) -> str:
    script = tmp_path / "scontrol"
    script.write_text(f"#!/bin/sh\necho '{fields}'\n")
    script.chmod(0o755)
    return str(script)


SRC = Source(bucket="reads", key="runs/a b.fastq", pipeline="align", version_id="v7")
COMMENT = provenance.encode(SRC, "nightly")


@pytest.mark.parametrize("context", ["prolog", "jobcomp"])
def test_the_hooks_event_is_the_trackers(tmp_path: Path, context: str) -> None:
    """Same detail, same eventId and resources as the tracker gives the change."""
    scontrol = fake_scontrol(tmp_path, f"JobId=42 JobName=align-a UserId=svc(2950) JobState=COMPLETING Reason=NonZeroExitCode "
                                       f"ExitCode=3:0 SubmitTime=2026-12-01T10:00:00 StartTime=2026-12-01T10:00:05 "
                                       f"Partition=q1 Comment={COMMENT}")
    if context == "prolog":
        env = {"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "42", "SLURM_JOB_COMMENT": COMMENT,
               "SLURM_JOB_NAME": "align-a", "SLURM_JOB_USER": "svc", "SLURM_JOB_PARTITION": "q1",
               "SLURM_JOB_START_TIME": "1796119205"}
        job = TrackedJob(cluster="pc1", job_id=42, state="RUNNING", previous_state="PENDING", name="align-a", user="svc",
                         partition="q1", pipeline="align", bucket="reads", key="runs/a b.fastq", version_id="v7",
                         submitted_at="2026-12-01T10:00:00Z", started_at="2026-12-01T10:00:05Z",
                         reason="NonZeroExitCode")
    else:  # jobcomp/script: JOBSTATE without the COMPLETING flag
        env = {"JOBID": "42", "JOBSTATE": "FAILED", "SUBMIT": "1796119200", "START": "1796119205", "END": "1796119210",
               "JOBNAME": "align-a", "PARTITION": "q1", "USERNAME": "svc"}
        job = TrackedJob(cluster="pc1", job_id=42, state="FAILED", previous_state="RUNNING", name="align-a", user="svc",
                         partition="q1", pipeline="align", bucket="reads", key="runs/a b.fastq", version_id="v7",
                         submitted_at="2026-12-01T10:00:00Z", started_at="2026-12-01T10:00:05Z",
                         ended_at="2026-12-01T10:00:10Z", exit_code=3, reason="NonZeroExitCode")
    entry = hn.hook_entry(env, "pc1", "bus", "slurm-trigger", scontrol)
    detail = json.loads(entry["Detail"])
    expected = state_change_detail(job)
    assert {**detail, "publishedBy": "tracker"} == {**expected, "eventId": detail["eventId"]}  # only the path differs
    assert detail["publishedBy"] == "headnode"
    assert detail["eventId"] == jobevents.event_id("pc1", 42, job.state, job.submitted_at)
    assert entry["Resources"] == list(resources(job))
    assert entry["DetailType"] == jobevents.DETAIL_TYPE and entry["Source"] == "slurm-trigger"
    envelope = {"version": "0", "id": "x", "account": "123456789012", "region": "us-east-1", "time": "2026-12-01T10:00:10Z",
                "source": "slurm-trigger", "detail-type": entry["DetailType"], "resources": entry["Resources"], "detail": detail}
    jsonschema.validate(envelope, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_the_hooks_event_of_an_array_task_of_a_step_is_the_trackers(tmp_path: Path) -> None:
    """scontrol's ArrayJobId/ArrayTaskId and the comment's step, as the poll reports them."""
    comment = provenance.encode(Source(bucket="reads", key="runs/r1", pipeline="demux", step="align"))
    scontrol = fake_scontrol(tmp_path, f"JobId=51 ArrayJobId=50 ArrayTaskId=1 JobName=align UserId=svc(2950) JobState=RUNNING "
                                       f"Reason=None ExitCode=0:0 SubmitTime=2026-12-01T10:00:00 Partition=q1 Comment={comment}")
    env = {"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "51", "SLURM_JOB_COMMENT": comment,
           "SLURM_JOB_NAME": "align", "SLURM_JOB_USER": "svc", "SLURM_JOB_PARTITION": "q1", "SLURM_JOB_START_TIME": "1796119205"}
    job = TrackedJob(cluster="pc1", job_id=51, state="RUNNING", previous_state="PENDING", name="align", user="svc", partition="q1",
                     pipeline="demux", bucket="reads", key="runs/r1", step="align", array_job_id=50, array_task_id=1,
                     submitted_at="2026-12-01T10:00:00Z", started_at="2026-12-01T10:00:05Z")
    detail = json.loads(hn.hook_entry(env, "pc1", "bus", "slurm-trigger", scontrol)["Detail"])
    assert {k: v for k, v in detail.items() if k not in ("eventId", "publishedBy")} == {
        k: v for k, v in state_change_detail(job).items() if k != "publishedBy"}
    assert (detail["arrayJobId"], detail["arrayTaskId"], detail["source"]["step"]) == (50, 1, "align")


def test_the_hook_reads_its_own_line_of_an_array_id(tmp_path: Path) -> None:
    """The last task of an array keeps the array's id, and ``scontrol show job`` of that
    id prints every task: the hook takes the line of its own ``JobId``."""
    comment = provenance.encode(Source(bucket="reads", key="runs/r1", pipeline="demux"))
    script = tmp_path / "scontrol"
    script.write_text("#!/bin/sh\ncat <<'EOF'\n"
                      f"JobId=51 ArrayJobId=50 ArrayTaskId=0 JobName=a JobState=FAILED ExitCode=4:0 Comment={comment}\n"
                      f"JobId=50 ArrayJobId=50 ArrayTaskId=1 JobName=a JobState=COMPLETED ExitCode=0:0 Comment={comment}\n"
                      "EOF\n")
    script.chmod(0o755)
    env = {"JOBID": "50", "JOBSTATE": "COMPLETED", "SUBMIT": "1796119200", "START": "1796119205", "END": "1796119210"}
    detail = json.loads(hn.hook_entry(env, "pc1", "bus", "slurm-trigger", str(script))["Detail"])
    assert (detail["jobId"], detail["arrayJobId"], detail["arrayTaskId"], detail["exitCode"]) == (50, 50, 1, 0)


def test_the_hook_skips_other_jobs_and_states(tmp_path: Path) -> None:
    scontrol = fake_scontrol(tmp_path, "JobId=7 Comment=(null) SubmitTime=2026-12-01T10:00:00")
    assert hn.hook_entry({"SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "7", "SLURM_JOB_COMMENT": "x"},
                         "pc1", "b", "s", scontrol) is None
    assert hn.hook_entry({"JOBID": "7", "JOBSTATE": "COMPLETED"}, "pc1", "b", "s", scontrol) is None
    assert hn.hook_entry({"JOBID": "7", "JOBSTATE": "RESIZING"}, "pc1", "b", "s", scontrol) is None
    assert hn.hook_entry({"SLURM_SCRIPT_CONTEXT": "epilog_slurmctld", "SLURM_JOB_ID": "7"}, "pc1", "b", "s", scontrol) is None


@pytest.mark.parametrize("value, expected", [("3:0", (3, None)), ("0:0", (0, None)), ("0:9", (None, 9)), ("", (None, None))])
def test_exit_codes_read_as_the_tracker_reports_them(value: str, expected: tuple) -> None:
    assert hn._exit(value) == expected


def test_the_pusher_puts_keeps_refused_and_drops_stale(aws, tmp_path: Path) -> None:
    events, sqs = boto3.client("events"), boto3.client("sqs")
    events.create_event_bus(Name="b")
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="r", EventBusName="b", EventPattern=json.dumps({"source": ["slurm-trigger"]}))
    events.put_targets(Rule="r", EventBusName="b", Targets=[{"Id": "q", "Arn": arn}])
    now = time.time()
    for i in range(12):  # more than one PutEvents call
        entry = {"Source": "slurm-trigger", "DetailType": "Slurm Job State Change", "EventBusName": "b",
                 "Detail": json.dumps({"jobId": i, "eventId": f"id-{i}"}), "Resources": []}
        (tmp_path / f"{i:03d}.json").write_text(json.dumps({"entry": entry, "at": now}))
    (tmp_path / "old.json").write_text(json.dumps({"entry": {}, "at": now - 7200}))
    assert hn.push_once(tmp_path, events, 3600, {}, now=now) == 12
    assert list(tmp_path.glob("*.json")) == []
    got = []
    while msgs := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        got += msgs
        for m in msgs:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    assert len(got) == 12

    class Refusing:
        def put_events(self, Entries):  # noqa: N803
            return {"FailedEntryCount": len(Entries), "Entries": [{"ErrorCode": "ThrottlingException"}] * len(Entries)}

    (tmp_path / "a.json").write_text(json.dumps({"entry": {"Detail": "{}"}, "at": now}))
    state: dict = {}
    assert hn.push_once(tmp_path, Refusing(), 3600, state, now=now) == 0
    assert (tmp_path / "a.json").exists() and state["a.json"][0] == 1  # kept, backing off
    assert hn.push_once(tmp_path, Refusing(), 3600, state, now=now + 0.1) == 0
    assert state["a.json"][0] == 1  # not tried again before its backoff ends


def test_the_kit_refuses_a_lifespan_shorter_than_one_and_a_half_intervals() -> None:
    text = (KIT / "slurm-trigger-headnode").read_text()
    assert "TOKEN_LIFESPAN * 2 >= TOKEN_INTERVAL * 3" in text
    assert "TOKEN_INTERVAL=1200 TOKEN_LIFESPAN=2400" in text  # defaults: 20 min, 40 min
    assert sys.version_info >= (3, 9)
