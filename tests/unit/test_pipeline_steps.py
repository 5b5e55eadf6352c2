"""Steps: parsing, their dependency strings, and ``render`` showing every step."""
from __future__ import annotations

import json

import pytest

from slurm_trigger import pipelines
from slurm_trigger_cli import main
from slurm_trigger.pipelines import PipelineError
from slurm_trigger.steps import step_key

CHAIN = """
name: chain
match: {prefix: in/}
steps:
  - {name: demux, job: {script: x, working_directory: /w}}
  - {name: align, after: [demux], job: {script: 'echo ${key}', working_directory: /w}}
  - {name: qc, after: {align: afterany, demux: afternotok}, singleton: true, job: {script: x, working_directory: /w}}
"""


def test_steps_chain_by_the_ids_slurm_gave(tmp_path):
    (tmp_path / "p.yaml").write_text(CHAIN)
    [p] = pipelines.load(tmp_path)
    demux, align, qc = p.jobs
    assert demux.dependency({}) is None
    assert align.dependency({"demux": 7}) == "afterok:7"
    assert qc.dependency({"demux": 7, "align": 8}) == "afterany:8,afternotok:7,singleton"
    assert step_key("st-a", None) == "st-a" and step_key("st-a", "qc") != step_key("st-b", "qc")


@pytest.mark.parametrize(
    "steps, message",
    [
        ("[{name: a, after: [b], job: {script: x}}]", "not an earlier step"),
        ("[{name: a, job: {script: x}}, {name: b, after: {a: afterwards}, job: {script: x}}]", "not one of"),
        ("[{name: a, job: {script: x}}, {name: a, job: {script: x}}]", "named twice"),
        ("[{name: A, job: {script: x}}]", "'name'"),
        ("[{name: a, as: array, job: {script: x}}]", "needs 'collect'"),
        ("[{name: a, job: {script: 'echo ${nope}'}}]", "nope"),
    ],
)
def test_bad_steps_are_refused(tmp_path, steps, message):
    (tmp_path / "p.yaml").write_text(f"name: x\nmatch: {{prefix: a/}}\nsteps: {steps}\n")
    with pytest.raises(PipelineError, match=message):
        pipelines.load(tmp_path)


def test_render_shows_every_step(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text(CHAIN)
    assert main(["render", "s3://b/in/x", "--api-version", "v0.0.42", "--pipelines", str(tmp_path)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in row["steps"]] == ["demux", "align", "qc"]
    comment = row["steps"][1]["body"]["job"]["comment"]
    assert step_key(row["idempotency_key"], "align") in comment and '"step":"align"' in comment
    assert row["steps"][2]["body"]["job"]["dependency"] == "afterany:<align>,afternotok:<demux>,singleton"
