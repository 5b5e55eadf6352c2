"""Sets of objects end to end: moto for AWS, the REAL local Slurm for jobs.

A set's jobs are counted in Slurm (jobs whose comment carries the set's key; the tasks
of an array count as one job), and what the job saw is read back from the files it
wrote, never from our own tables.
"""
from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest

from slurm_trigger import setstore
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.trigger import build_trigger
from test_trigger import HOSTILE, World, _clients, make_world, notification, wait_final  # sibling module

pytestmark = pytest.mark.real_slurm

SETS_TABLE = "slurm-trigger-sets"  # Settings' default
REPO = Path(__file__).resolve().parents[2]
RUN = "reads/run1"

PAIRS = r"""
name: pairs
match: {prefix: "reads/", suffix: ".fastq.gz"}
collect:
  pattern: '(?P<run>reads/[^/]+)/(?P<sample>[^/]+)_S(?P<num>\d+)_L(?P<lane>\d{3})_(?P<read>R[12])_001\.fastq\.gz'
  member: read
  members: [R1, R2]
  name: "{run}/{sample}_L{lane}"
  deadline: 1h
job:
  name: pair-${sample}
  script: |
    #!/bin/bash
    printf '%s\n%s' "$SLURM_TRIGGER_MEMBER_R1" "$SLURM_TRIGGER_MEMBER_R2" > "$OUT_DIR/pair-$SLURM_JOB_ID"
    printf '%s' ${sample} > "$OUT_DIR/sample-$SLURM_JOB_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
  time_limit: 2
"""

BANDS = r"""
name: bands
match: {prefix: "scan/"}
collect:
  count: 3
  as: array
  throttle: 2
job:
  script: |
    #!/bin/bash
    V=SLURM_TRIGGER_MEMBER_$SLURM_ARRAY_TASK_ID
    printf '%s' "${!V}" > "$OUT_DIR/task-$SLURM_ARRAY_JOB_ID-$SLURM_ARRAY_TASK_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}
  time_limit: 2
"""

def members_pipeline(name: str, match: str, collect: str) -> str:
    """A set pipeline whose job writes the members it was given to a file."""
    return f"""
name: {name}
match: {match}
collect: {collect}
job:
  script: |
    #!/bin/bash
    printf '%s' "$SLURM_TRIGGER_MEMBERS" > "$OUT_DIR/members-$SLURM_JOB_ID"
  partition: debug
  working_directory: WORKDIR
  standard_output: /dev/null
  environment: {{PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: OUTDIR}}
  time_limit: 2
"""


WINDOW = members_pipeline("feed", '{prefix: "feed/"}', "{window: 10m}")
MARKER = members_pipeline("run", '{prefix: "runs/", suffix: ".fastq.gz"}', "{marker: CopyComplete.txt}")
MANIFEST = members_pipeline("batch", '{prefix: "batches/"}', "{manifest: manifest.txt, deadline: 1h}")


@pytest.fixture
def world(aws, slurm_target, tmp_path) -> World:
    setstore.create_table(boto3.client("dynamodb"), SETS_TABLE)
    return make_world(slurm_target, tmp_path, PAIRS, BANDS, WINDOW, MARKER, MANIFEST)


def ref(key: str, bucket: str = "bkt", versioned: bool = True) -> ObjectRef:
    version = uuid.uuid4().hex if versioned else None
    return ObjectRef(bucket, key, size=3, etag="e" + uuid.uuid4().hex[:8], version_id=version, sequencer="00A1")


def uid() -> str:
    """Sets are keyed on names: the clusters keep earlier runs' jobs, so every test
    names its own."""
    return uuid.uuid4().hex[:8]


def mate(sample: str, read: str, lane: str = "001") -> str:
    return f"{RUN}/{sample}_S1_L{lane}_{read}_001.fastq.gz"


def check_schema(event: dict[str, Any], name: str) -> None:
    schema = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
    jsonschema.validate(event, schema, cls=jsonschema.Draft202012Validator)


def set_jobs(world: World, set_id: str) -> set[int]:
    """The jobs Slurm has for one set: an array's tasks count once."""
    return {j.array_job_id or j.job_id for j in world.jobs_with(set_id)}


def deliver(world: World, r: ObjectRef) -> Any:
    [outcome] = world.trigger.handle_event(notification(r))
    return outcome


def wait_file(world: World, name: str, limit: float = 120) -> str:
    deadline = time.monotonic() + limit
    while not world.exists(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    return world.read(name)


def test_pair_in_every_order_and_duplicated_makes_one_job(world):
    """Each order of R1, R2 and a redelivery of each: one job, once the pair is in."""
    for n, order in enumerate(sorted(set(itertools.permutations(["R1", "R1", "R2", "R2"])))):
        sample = f"order{n}-{uuid.uuid4().hex[:6]}"
        mates = {read: ref(mate(sample, read)) for read in ("R1", "R2")}
        outcomes = [deliver(world, mates[read]) for read in order]
        statuses = [o.status for o in outcomes]
        first_complete = next(i for i in range(4) if set(order[: i + 1]) == {"R1", "R2"})
        assert statuses[first_complete] == "submitted", (order, statuses)
        assert statuses[:first_complete] == ["collected"] * first_complete, (order, statuses)
        assert statuses[first_complete + 1 :] == ["duplicate"] * (3 - first_complete), (order, statuses)
        set_id = outcomes[first_complete].idempotency_key
        assert set_jobs(world, set_id) == {outcomes[first_complete].job_id}
    job_id = outcomes[first_complete].job_id
    assert world.wait_final(job_id).state == "COMPLETED"
    assert world.read(f"pair-{job_id}") == f"{mates['R1'].key}\n{mates['R2'].key}"
    submitted = [e for e in world.events() if e["detail-type"] == "Slurm Job Submitted"]
    assert len(submitted) == n + 1
    check_schema(submitted[-1], "slurm-job-submitted")
    detail = submitted[-1]["detail"]
    assert detail["set"]["members"] == [mates["R1"].key, mates["R2"].key]
    assert detail["source"]["key"] == f"{RUN}/{sample}_L001" and detail["source"]["pipeline"] == "pairs"


def test_lanes_and_samples_are_separate_sets(world):
    s, t = f"s{uid()}", f"t{uid()}"
    keys = [mate(s, "R1", "001"), mate(s, "R1", "002"), mate(t, "R2", "001"), mate(s, "R2", "002")]
    statuses = [deliver(world, ref(k)).status for k in keys]
    assert statuses == ["collected", "collected", "collected", "submitted"]


def test_array_tasks_each_see_their_own_member(world):
    keys = [f"scan/{uid()}/2026/335/10/band-{b:02d}.nc" for b in (3, 1, 2)]
    keys = [keys[0].rsplit("/", 1)[0] + "/" + k.rsplit("/", 1)[1] for k in keys]
    outcomes = [deliver(world, ref(k)) for k in keys]
    assert [o.status for o in outcomes] == ["collected", "collected", "submitted"]
    array_id = outcomes[-1].job_id
    for task, key in enumerate(sorted(keys)):
        assert wait_file(world, f"task-{array_id}-{task}") == key
    assert set_jobs(world, outcomes[-1].idempotency_key) == {array_id}
    assert deliver(world, ref(keys[0])).status in ("late", "duplicate")


def test_hostile_keys_as_members_run_nothing(world):
    """Keys that would be shell in a script, as the three members of an array and as
    a pair whose sample capture is hostile: each reaches its task intact."""
    canary = f"pwned-{uuid.uuid4().hex[:8]}"  # in the job's working directory: no "/" in the keys' names
    folder = f"scan/{uid()}/"
    hostile = [k.replace("in/", folder).replace("CANARY", canary) for k in HOSTILE[:3]]
    outcomes = [deliver(world, ref(k)) for k in hostile]
    assert outcomes[-1].status == "submitted", outcomes
    for task, key in enumerate(sorted(hostile)):
        assert wait_file(world, f"task-{outcomes[-1].job_id}-{task}") == key
    sample = f"$(touch {canary})`touch {canary}`;touch {canary}"
    pair = [deliver(world, ref(mate(sample, r))) for r in ("R2", "R1")]
    job = world.wait_final(pair[-1].job_id)
    assert job.state == "COMPLETED"
    assert world.read(f"sample-{job.job_id}") == sample
    assert set(job.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert not world.target.host_path(f"{world.target.workdir}/{canary}").exists()


def test_control_character_member_is_reported_and_never_joins(world):
    outcome = deliver(world, ref("scan/cc/bad\nname.nc"))
    assert outcome.status == "failed" and "control character" in outcome.reason
    assert [e["detail-type"] for e in world.events()] == ["Slurm Job Submission Failed"]


def test_incomplete_pair_past_its_deadline_is_reported_once_then_still_fires(world):
    lonely = f"lonely{uid()}"
    r1 = ref(mate(lonely, "R1"))
    assert deliver(world, r1).status == "collected"
    later = int(time.time()) + 3601
    assert world.trigger.sets.check(world.trigger.pipelines, now=later) == []
    [event] = world.events()
    assert event["detail-type"] == "Slurm Trigger Set Incomplete"
    check_schema(event, "slurm-trigger-set-incomplete")
    detail = event["detail"]["set"]
    assert detail["missing"] == ["R2"] and detail["members"] == [r1.key] and detail["name"] == f"{RUN}/{lonely}_L001"
    world.trigger.sets.check(world.trigger.pipelines, now=later + 60)
    assert world.events() == []  # reported once
    outcome = deliver(world, ref(mate(lonely, "R2")))
    assert outcome.status == "submitted"
    assert set_jobs(world, outcome.idempotency_key) == {outcome.job_id}


def test_window_fires_with_whatever_arrived(world):
    feed = f"feed/{uid()}"
    keys = [f"{feed}/a.csv", f"{feed}/b.csv"]
    outcomes = [deliver(world, ref(k)) for k in keys]
    assert [o.status for o in outcomes] == ["collected", "collected"]
    assert world.trigger.sets.check(world.trigger.pipelines, now=int(time.time()) + 30) == []  # window open
    [fired] = world.trigger.sets.check(world.trigger.pipelines, now=int(time.time()) + 601)
    assert fired.status == "submitted"
    assert world.wait_final(fired.job_id).state == "COMPLETED"
    assert world.read(f"members-{fired.job_id}") == "\n".join(keys)
    assert world.trigger.sets.check(world.trigger.pipelines, now=int(time.time()) + 1200) == []
    assert deliver(world, ref(f"{feed}/c.csv")).status == "late"
    assert set_jobs(world, fired.idempotency_key) == {fired.job_id}


def test_marker_fires_the_objects_under_its_folder(world):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="seq")
    run = f"runs/{uuid.uuid4().hex[:8]}"
    members = [f"{run}/Data/s{i}_R1_001.fastq.gz" for i in range(3)]
    for key in members + [f"{run}/RunInfo.xml"]:
        s3.put_object(Bucket="seq", Key=key, Body=b"x")
        if key.endswith(".gz"):
            assert deliver(world, ref(key, "seq")).status == "collected"
    marker = ref(f"{run}/CopyComplete.txt", "seq")
    outcome = deliver(world, marker)
    assert outcome.status == "submitted"
    assert deliver(world, marker).status == "duplicate"
    assert world.wait_final(outcome.job_id).state == "COMPLETED"
    assert world.read(f"members-{outcome.job_id}") == "\n".join(sorted(members))


def test_manifest_completes_whichever_lands_last(world):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="lab")
    batch = f"batches/{uid()}"
    s3.put_object(Bucket="lab", Key=f"{batch}/manifest.txt", Body=b"# batch 1\nx.csv\ny.csv\n")
    statuses = [deliver(world, ref(f"{batch}/{k}", "lab", versioned=False)).status for k in ("y.csv", "manifest.txt", "z.csv")]
    assert statuses == ["collected"] * 3
    outcome = deliver(world, ref(f"{batch}/x.csv", "lab"))
    assert outcome.status == "submitted"
    assert world.wait_final(outcome.job_id).state == "COMPLETED"
    assert world.read(f"members-{outcome.job_id}") == f"{batch}/x.csv\n{batch}/y.csv"


def test_winner_that_died_is_finished_by_the_check(world):
    """The Lambda that closed the set died before submitting: the scheduled check
    (after the claim would have expired) makes the one job."""
    store = world.trigger.sets.store
    dead = f"dead{uid()}"
    r1, r2 = ref(mate(dead, "R1")), ref(mate(dead, "R2"))
    assert deliver(world, r1).status == "collected"
    spec = world.trigger.pipelines[0].collect
    place = spec.place("pairs", r2)
    store.add(setstore.Where(place.set_id, "pairs", "bkt", place.name, spec.span), "R2", setstore.Member(r2.key, r2.version_id, r2.etag))
    assert store.close(place.set_id, redrive_after=0) is not None  # ...and the Lambda dies here
    [outcome] = [o for o in world.trigger.sets.check(world.trigger.pipelines, now=int(time.time()) + 1) if o.pipeline == "pairs"]
    assert outcome.status == "submitted"
    assert deliver(world, r2).status == "duplicate"
    assert set_jobs(world, place.set_id) == {outcome.job_id}



def test_shipped_examples_run_with_the_sites_paths_and_partition(world):
    """paired-reads and illumina-run as shipped, their paths and partition from the
    site's settings (SITE_ROOT, SITE_PARTITION, SITE_DATA) pointed at this cluster."""
    site = {"root": world.outdir, "partition": "debug", "data": f"{world.outdir}/data"}
    trigger = build_trigger(replace(world.settings, pipelines_path=str(REPO / "pipelines"), site=site), **_clients())
    run = uid()
    mates = [f"fastq/{run}/NA12878_S1_L001_R2_001.fastq.gz", f"fastq/{run}/NA12878_S1_L001_R1_001.fastq.gz"]
    outcomes = [trigger.handle_event(notification(ref(k)))[0] for k in mates]
    assert [o.status for o in outcomes] == ["collected", "submitted"]
    job = wait_final(trigger.client, outcomes[-1].job_id)
    assert (job.state, job.partition) == ("COMPLETED", "debug")
    assert world.read(f"aligned/{job.job_id}.pair") == f"{mates[1]}\n{mates[0]}\n"

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bkt")
    samples = [f"runs/{run}/Data/{s}_S{i}_L001_R{r}_001.fastq.gz" for i, s in enumerate("AB", 1) for r in (1, 2)]
    for key in samples:
        s3.put_object(Bucket="bkt", Key=key, Body=b"@r\nACGT\n+\nIIII\n")
    [outcome] = trigger.handle_event(notification(ref(f"runs/{run}/CopyComplete.txt")))
    assert outcome.status == "submitted" and set(outcome.steps) == {"align", "qc"}
    qc = wait_final(trigger.client, outcome.steps["qc"])
    assert qc.state == "COMPLETED"
    r1s = [k for k in samples if "_R1_" in k]
    for task, key in enumerate(r1s):
        assert world.read(f"aligned/{outcome.steps['align']}_{task}.sample") == key + "\n"
