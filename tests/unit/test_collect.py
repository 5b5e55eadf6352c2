"""Sets: the collect section, where an object belongs, the store's transitions, the
dry run of ``render`` over several keys."""
from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from slurm_trigger import collect, pipelines, setstore
from slurm_trigger_cli import main
from slurm_trigger.pipelines import PipelineError
from slurm_trigger.s3events import ObjectRef

PAIRS = r"""
name: pairs
match: {prefix: "fastq/", suffix: ".fastq.gz"}
collect:
  pattern: '(?P<run>fastq/[^/]+)/(?P<sample>[^/]+)_S\d+_L(?P<lane>\d{3})_(?P<read>R[12])_001\.fastq\.gz'
  member: read
  members: [R1, R2]
  deadline: 6h
job:
  name: align-${sample}
  script: "#!/bin/bash\nalign\n"
  working_directory: /shared
"""


def load(tmp_path: Path, text: str) -> pipelines.Pipeline:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(text))
    [p] = pipelines.load(tmp_path)
    return p


def test_illumina_mates_share_a_set_and_lanes_do_not(tmp_path):
    p = load(tmp_path, PAIRS)
    spec = p.collect
    r1 = spec.place("pairs", ObjectRef("b", "fastq/run7/NA12878_S1_L001_R1_001.fastq.gz"))
    r2 = spec.place("pairs", ObjectRef("b", "fastq/run7/NA12878_S1_L001_R2_001.fastq.gz"))
    lane2 = spec.place("pairs", ObjectRef("b", "fastq/run7/NA12878_S1_L002_R2_001.fastq.gz"))
    assert r1.set_id == r2.set_id != lane2.set_id
    assert (r1.member, r2.member) == ("R1", "R2")
    assert r1.captures == {"run": "fastq/run7", "sample": "NA12878", "lane": "001"}
    assert r1.name == "fastq/run7/NA12878/001"
    assert spec.place("pairs", ObjectRef("b", "fastq/run7/NA12878_S1_L001_I1_001.fastq.gz")) is None
    assert spec.span == 6 * 3600
    assert p.accepts(ObjectRef("b", "fastq/run7/x_S1_L001_R1_001.fastq.gz"))


@pytest.mark.parametrize(
    "section, message",
    [
        ("{members: [R1, R2]}", "needs a 'pattern'"),
        ("{count: 3, manifest: m.txt}", "exactly one of"),
        ("{count: 0}", "positive integer"),
        ("{count: 2, window: 5m, deadline: 1h}", "not both"),
        ("{marker: CopyComplete.txt, deadline: 1h}", "no 'deadline'"),
        ("{marker: a/b.txt}", "file name"),
        ("{count: 2, as: tasks}", "'collect.as'"),
        ("{count: 2, throttle: 2}", "for 'as: array' only"),
        ("{count: 2, window: soon}", "duration"),
        ("{count: 2, pattern: '(?P<key>.*)'}", "template variables already"),
        ("{count: 2, pattern: '(?P<member_0>.*)'}", "members' variables"),
        ("{count: 2, colour: red}", "unknown collect field"),
    ],
)
def test_bad_collect_sections_are_refused_at_load(tmp_path, section, message):
    text = f"name: x\nmatch: {{prefix: a/}}\ncollect: {section}\njob: {{script: x, working_directory: /w}}\n"
    with pytest.raises(PipelineError, match=message):
        load(tmp_path, text)


def test_a_set_template_cannot_use_object_variables(tmp_path):
    with pytest.raises(PipelineError, match=r"\$\{key\}.*a set has no single object.*SLURM_TRIGGER_MEMBERS"):
        load(tmp_path, "name: x\nmatch: {prefix: a/}\ncollect: {count: 2}\njob: {script: 'echo ${key}'}\n")
    p = load(tmp_path, "name: x\nmatch: {prefix: a/}\ncollect: {count: 2}\njob: {script: 'echo ${set} ${member_count}'}\n")
    assert p.collect.kind == "count"


def test_manifest_lines():
    assert collect.manifest_members("# run 7\na.csv\n\nb.csv\na.csv\n") == ("a.csv", "b.csv")
    for bad in ("../x\n", "/etc/passwd\n", "sub/x\n", "# nothing\n"):
        with pytest.raises(ValueError):
            collect.manifest_members(bad)


def test_member_environment_names_and_indexes(tmp_path):
    spec = load(tmp_path, PAIRS).collect
    env = collect.member_environment(spec, [("R1", "a R1"), ("R2", "a R2")])
    assert env == {
        "SLURM_TRIGGER_MEMBERS": "a R1\na R2",
        "SLURM_TRIGGER_MEMBER_COUNT": "2",
        "SLURM_TRIGGER_MEMBER_0": "a R1",
        "SLURM_TRIGGER_MEMBER_R1": "a R1",
        "SLURM_TRIGGER_MEMBER_1": "a R2",
        "SLURM_TRIGGER_MEMBER_R2": "a R2",
    }


@pytest.fixture
def store():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        setstore.create_table(client, "sets")
        yield setstore.DynamoDBSetStore(client, "sets", clock=lambda: 1_700_000_000)


def test_store_closes_a_set_exactly_once(store):
    where = setstore.Where("st-1", "pairs", "b", "s/1", span=60)
    first = store.add(where, "R1", setstore.Member("k1", "v1"))
    assert first.status == setstore.OPEN and set(first.members) == {"R1"} and first.due_at == 1_700_000_060
    second = store.add(where, "R2", setstore.Member("k2", "v2"))
    assert set(second.members) == {"R1", "R2"}
    assert store.add(where, "R2", setstore.Member("k2", "v2")).members == second.members  # redelivered
    closed = store.close("st-1", redrive_after=90)
    assert closed.status == setstore.COMPLETE and closed.members["R2"].key == "k2"
    assert store.close("st-1", redrive_after=90) is None
    late = store.add(where, "R3", setstore.Member("k3"))
    assert not late.changed and "R3" not in late.members
    assert [s.set_id for s in store.due("pairs", 1_700_000_090)] == ["st-1"]  # until its job is recorded
    store.finished("st-1", 42)
    assert list(store.due("pairs", 1_800_000_000)) == []
    assert store.add(where, "R1", setstore.Member("k1", "v1")).job_id == 42


def test_store_due_index_holds_open_sets_until_reported(store):
    store.add(setstore.Where("st-2", "p", "b", "n", span=60), "a", setstore.Member("a"))
    store.add(setstore.Where("st-3", "p", "b", "n", span=None), "a", setstore.Member("a"))
    assert list(store.due("p", 1_700_000_059)) == []
    assert [s.set_id for s in store.due("p", 1_700_000_060)] == ["st-2"]
    store.reported("st-2")
    assert list(store.due("p", 1_800_000_000)) == []


def test_render_dry_runs_a_whole_set(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text(textwrap.dedent(PAIRS))
    keys = ["fastq/r/A_S1_L001_R1_001.fastq.gz", "fastq/r/A_S1_L001_R2_001.fastq.gz", "fastq/r/B_S2_L001_R1_001.fastq.gz"]
    code = main(["render", *[f"s3://seq/{k}" for k in keys], "--api-version", "v0.0.42", "--pipelines", str(tmp_path)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    done, waiting = rows
    assert done["complete"] and done["members"] == keys[:2] and done["set"] == "fastq/r/A/001"
    env = done["body"]["job"]["environment"]
    assert f"SLURM_TRIGGER_MEMBER_R2={keys[1]}" in env and done["body"]["job"]["name"] == "align-A"
    assert not waiting["complete"] and waiting["missing"] == ["R2"] and "body" not in waiting


def test_render_dry_runs_an_array_with_its_throttle(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text(
        "name: bands\nmatch: {prefix: scan/}\ncollect: {count: 2, as: array, throttle: 1}\n"
        "job: {script: x, working_directory: /w}\n"
    )
    main(["render", "s3://b/scan/1/b2.nc", "s3://b/scan/1/b1.nc", "--api-version", "v0.0.38", "--pipelines", str(tmp_path)])
    [row] = json.loads(capsys.readouterr().out)
    job = row["body"]["job"]
    assert job["array"] == "0-1%1"
    assert job["environment"]["SLURM_TRIGGER_MEMBER_0"] == "scan/1/b1.nc"  # v0.0.38: an object


SHIPPED = Path(__file__).resolve().parents[2] / "pipelines"
GOES = "goes/ABI-L1b-RadF/2026/335/10/OR_ABI-L1b-RadF-M6C{band:02d}_G16_s20263351000204_e20263351009512_c20263351009570.nc"
EXAMPLES = {
    "paired-reads": ["fastq/run7/NA12878_S1_L001_R2_001.fastq.gz", "fastq/run7/NA12878_S1_L001_R1_001.fastq.gz"],
    "illumina-run": ["runs/r1/Data/A_S1_L001_R1_001.fastq.gz", "runs/r1/Data/B_S2_L001_R1_001.fastq.gz", "runs/r1/CopyComplete.txt"],
    "goes-scan": [GOES.format(band=b) for b in range(16, 0, -1)],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_shipped_set_examples_run_in_bash(tmp_path, name):
    """The set examples with a site's settings: complete from their keys, and every
    step's script runs in plain bash with the environment the job gets."""
    from slurm_trigger.sets import dry_run

    site = {"root": str(tmp_path / "jobs"), "partition": "debug", "data": str(tmp_path / "data")}
    [p] = [p for p in pipelines.load(SHIPPED, site) if p.name == name]
    [row] = dry_run(p, [ObjectRef("seq", k, size=1, version_id="v") for k in EXAMPLES[name]])
    assert row["complete"], row
    for step, job in row["jobs"]:
        assert job.partition == "debug" and job.working_directory == site["root"]
        for task in range(len(row["members"]) if job.array else 1):
            env = {**job.environment, "SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": str(task)}
            run = subprocess.run(["bash", "-c", job.script], env=env, capture_output=True, text=True, cwd=tmp_path)
            assert run.returncode == 0, (step, run.stderr)
    assert "aligning" in run.stdout or "composite of 16 bands" in run.stdout or "QC of run" in run.stdout


def test_site_values_are_required_unless_defaulted(tmp_path):
    (tmp_path / "p.yaml").write_text("name: x\nmatch: {prefix: a/}\njob: {script: x, partition: '@{queue}', working_directory: '@{root:-/shared}'}\n")
    with pytest.raises(PipelineError, match="SITE_QUEUE"):
        pipelines.load(tmp_path)
    [p] = pipelines.load(tmp_path, {"queue": "compute"})
    assert (p.template.partition, p.template.working_directory) == ("compute", "/shared")
