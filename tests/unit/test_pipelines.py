"""Pipeline files: loading, validation with file/pipeline/variable named, matching."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slurm_trigger import pipelines
from slurm_trigger.pipelines import PipelineError
from slurm_trigger.s3events import ObjectRef
from slurm_trigger.templating import object_variables, render

SHIPPED = Path(__file__).resolve().parents[2] / "pipelines"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_pipelines_load():
    names = [p.name for p in pipelines.load(SHIPPED)]
    assert names == ["forecast-tile", "goes-scan", "illumina-run", "paired-reads"]


@pytest.mark.parametrize(
    "key, expected",
    [
        # mates pair by Illumina's names, whichever lands first (align-reads, which paired by R1, is retired)
        ("fastq/run1/s_S1_L001_R1_001.fastq.gz", ["paired-reads"]),
        ("fastq/run1/s_S1_L001_R2_001.fastq.gz", ["paired-reads"]),
        ("reads/run1/s_R1.fastq.gz", []),
        ("fastq/run1/s.fastq", []),
        ("tiles/2026/T32.tif", ["forecast-tile"]),
        ("other/T32.tif", []),
    ],
)
def test_shipped_matching(key, expected):
    ref = ObjectRef("any-bucket", key, size=10)
    assert [p.name for p in pipelines.matching(pipelines.load(SHIPPED), ref)] == expected


def test_empty_reads_do_not_match():
    assert pipelines.matching(pipelines.load(SHIPPED), ObjectRef("b", "fastq/r/s_S1_L001_R1_001.fastq.gz", size=0)) == []


@pytest.mark.parametrize("key", ["tiles/x y.tif", "tiles/run 1/$(id).tif"])
def test_shipped_scripts_run_in_bash(key, tmp_path):
    """The example scripts are plain bash: render them and run them here."""
    for p in pipelines.matching(pipelines.load(SHIPPED), ObjectRef("b", key, size=5, version_id="v")):
        job = render(p.template, object_variables(ObjectRef("b", key, size=5, version_id="v"), p.name, "st-x"))
        run = subprocess.run(["bash", "-c", job.script], env=job.environment, capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"s3://b/{key}" in run.stdout


def test_several_pipelines_may_match(tmp_path):
    write(tmp_path, "a.yaml", """
        name: a
        match: {prefix: in/}
        job: {script: "#!/bin/bash\\ntrue\\n"}
    """)
    write(tmp_path, "b.yml", """
        name: b
        match: {suffix: .csv, bucket: [b1, b2]}
        job: {script: "#!/bin/bash\\ntrue\\n"}
    """)
    loaded = pipelines.load(tmp_path)
    assert [p.name for p in pipelines.matching(loaded, ObjectRef("b1", "in/x.csv"))] == ["a", "b"]
    assert [p.name for p in pipelines.matching(loaded, ObjectRef("b3", "in/x.csv"))] == ["a"]


def test_script_file_is_read_beside_the_yaml(tmp_path):
    (tmp_path / "s").mkdir()
    write(tmp_path / "s", "run.sh", "#!/bin/bash\necho ${key}\n")
    write(tmp_path, "p.yaml", """
        name: p
        match: {prefix: x}
        job: {script_file: s/run.sh}
    """)
    assert pipelines.load(tmp_path)[0].template.script == "#!/bin/bash\necho ${key}\n"


def test_unknown_variable_names_file_pipeline_and_variable(tmp_path):
    path = write(tmp_path, "p.yaml", """
        name: bad-one
        match: {prefix: x}
        job: {script: "#!/bin/bash\\necho ${colour}\\n"}
    """)
    with pytest.raises(PipelineError) as info:
        pipelines.load(tmp_path)
    message = str(info.value)
    assert str(path) in message and "'bad-one'" in message and "${colour}" in message


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: p\nmatch: {prefix: x}\njob: {script: x}\nextra_field: 1\n", "unknown field(s) extra_field"),
        ("name: p\nmatch: {prefx: x}\njob: {script: x}\n", "unknown match field(s) prefx"),
        ("name: p\njob: {script: x}\n", "'match' must be an object"),
        ("name: p\nmatch: {prefix: x, min_size: -1}\njob: {script: x}\n", "min_size"),
        ("name: p\nmatch: {prefix: x}\njob: {scrpt: x}\n", "unknown submission field(s) scrpt"),
        ("name: p\nmatch: {prefix: x}\njob: {script_file: missing.sh}\n", "missing.sh"),
        ("name: 'bad name'\nmatch: {prefix: x}\njob: {script: x}\n", "'name' must be"),
        ("name: p\nmatch: {prefix: x}\nmetadata: yes please\njob: {script: x}\n", "'metadata' must be"),
        ("- a\n- b\n", "one YAML object"),
        ("name: p\nmatch: {prefix: [x\n", "while parsing"),
        # wrong types a pipeline author writes: refused when the file loads, not by Slurm per object
        ("name: p\nmatch: {prefix: x}\njob: {script: x, comment: 12}\n", "'comment' must be a string"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, time_limit: ten}\n", "'time_limit' must be a whole number of minutes"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, time_limit: 2h}\n", "'time_limit' must be a whole number of minutes"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, memory_per_node: 4G}\n", "'memory_per_node' must be a whole number of MiB"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, nodes: -1}\n", "'nodes' must be a whole number"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, tasks: true}\n", "'tasks' must be a whole number"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, environment: {REF: }}\n", "'environment.REF' must be"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, environment: {DEBUG: yes}}\n", "'environment.DEBUG' must be"),
        ("name: p\nmatch: {prefix: x}\njob: {script: x, extra: [a]}\n", "'extra' must be an object"),
        ("name: p\nmatch: {prefix: x}\nsteps: [{name: a, job: {script_file: gone.sh}}]\n", "step 'a': script_file gone.sh"),
    ],
)
def test_invalid_files(tmp_path, text, needle):
    (tmp_path / "p.yaml").write_text(text)
    _, errors = pipelines.load_all(tmp_path)
    assert len(errors) == 1 and needle in str(errors[0]) and "p.yaml" in str(errors[0])


def test_numbers_may_be_given_as_digits(tmp_path):
    """A site value is text (``time_limit: "@{minutes:-30}"``): digits are a number."""
    write(tmp_path, "p.yaml", """
        name: p
        match: {prefix: x}
        job: {script: x, time_limit: "@{minutes:-30}", tasks: "4", environment: {N: 4, F: 0.5}}
    """)
    template = pipelines.load(tmp_path)[0].template
    assert (template.time_limit, template.tasks, template.environment) == (30, 4, {"N": "4", "F": "0.5"})


def test_duplicate_names_and_every_error_reported(tmp_path):
    for f in ("a.yaml", "b.yaml"):
        write(tmp_path, f, "name: same\nmatch: {prefix: x}\njob: {script: x}\n")
    write(tmp_path, "c.yaml", "name: c\nmatch: {prefix: x}\njob: {script: '${nope}'}\n")
    loaded, errors = pipelines.load_all(tmp_path)
    assert [p.name for p in loaded] == ["same"]
    assert len(errors) == 2 and "also defined in" in str(errors[0]) and "${nope}" in str(errors[1])


def test_metadata_opt_in(tmp_path):
    write(tmp_path, "p.yaml", "name: p\nmatch: {prefix: x}\nmetadata: true\njob: {script: 'echo ${metadata_run_id}'}\n")
    assert pipelines.load(tmp_path)[0].metadata


def test_missing_path():
    with pytest.raises(PipelineError, match="no such pipeline"):
        pipelines.load("/nonexistent/pipelines")


def test_validate_shows_unsafe_placements(tmp_path):
    """``slurm-trigger validate`` prints each refused placement, naming file, pipeline,
    variable, line, context and the environment variable to use, and exits 1."""
    write(tmp_path, "bad.yaml", """
        name: bad
        match: {prefix: in/}
        job:
          script: |
            #!/bin/bash
            awk '{print "${stem}"}' f
            eval "ls ${key}"
          partition: debug
    """)
    run = subprocess.run([sys.executable, "-c", "import sys; from slurm_trigger_cli import main; sys.exit(main())",
                          "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    err = run.stderr
    assert f"{tmp_path / 'bad.yaml'}: pipeline 'bad'" in err
    assert "${stem} on line 2 of the script is in single quotes" in err and 'ENVIRON["SLURM_TRIGGER_STEM"]' in err
    assert "${key} on line 3 of the script is in double quotes, in the arguments of eval" in err and "SLURM_TRIGGER_KEY" in err


def test_a_script_file_is_named_in_refusals(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_text("#!/bin/bash\necho ok\necho '${key}'\n")
    write(tmp_path, "p.yaml", """
        name: p
        match: {prefix: in/}
        job: {script_file: scripts/run.sh, partition: debug}
    """)
    with pytest.raises(PipelineError, match=r"pipeline 'p': in script_file scripts/run.sh: \$\{key\} on line 3 of the script"):
        pipelines.load(tmp_path)
