"""Template variables, quoting per field, hostile keys.

The placements of a template variable in a script are in tests/unit/test_shellscan.py."""
from __future__ import annotations


import pytest

from slurm_trigger.s3events import ObjectRef
from slurm_trigger.slurm.models import JobSubmission
from slurm_trigger.templating import (
    VARIABLES,
    TemplateError,
    UnsafeValueError,
    check_template,
    env_name,
    identifiers,
    object_variables,
    render,
)

HOSTILE_KEYS = [
    "in/$(touch /tmp/pwned-tmpl).txt",
    "in/`touch /tmp/pwned-tmpl`.txt",
    "in/a; touch /tmp/pwned-tmpl.txt",
    "in/a && touch /tmp/pwned-tmpl.txt",
    "in/it's \"quoted\".txt",
    "in/\u00fcnic\u00f8de \u2603 \U0001f600.txt",
    "in/with spaces/and+plus%25.txt",
    "in/../../etc/passwd",
    "in/" + "k" * 1021,
]


def ref(key: str = "reads/run1/s_R1.fastq.gz", **kw) -> ObjectRef:
    return ObjectRef(bucket="bkt", key=key, size=10, etag="e", version_id="v1", sequencer="s", **kw)


def values(key: str = "reads/run1/s_R1.fastq.gz", metadata=None) -> dict[str, str]:
    return object_variables(ref(key), "align", "st-abc", metadata)


def test_variables():
    v = values()
    assert v["dirname"] == "reads/run1" and v["basename"] == "s_R1.fastq.gz"
    assert v["stem"] == "s_R1" and v["extension"] == ".fastq.gz"
    assert v["s3_uri"] == "s3://bkt/reads/run1/s_R1.fastq.gz" and v["size"] == "10"
    assert v["version_id"] == "v1" and v["region"] == "" and v["pipeline"] == "align"


def test_top_level_key_and_hidden_file():
    v = values(".hidden")
    assert v["dirname"] == "" and v["stem"] == ".hidden" and v["extension"] == ""


def test_metadata_variables():
    v = values(metadata={"Run-Id": "r7"})
    assert v["metadata_run_id"] == "r7"


def test_only_lowercase_braced_names_are_variables():
    assert identifiers("${key} $HOME ${PATH} $1 $$ ${x_1} $${stem}") == ["key", "x_1"]


def test_shell_syntax_survives_rendering():
    sub = JobSubmission(script="#!/bin/bash\necho $HOME ${PATH} $$ $1 $${stem} ${stem} $$${stem}\n")
    out = render(sub, values()).script
    assert out == '#!/bin/bash\necho $HOME ${PATH} $$ $1 ${stem} "${SLURM_TRIGGER_STEM}" $${stem}\n'


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_names_and_paths_are_sanitized(key):
    sub = JobSubmission(
        script="#!/bin/bash\ntrue\n",
        name="x-${basename}",
        working_directory="/tmp/jobs/${dirname}",
        standard_output="/tmp/jobs/${key}.%j.out",
    )
    job = render(sub, values(key))
    assert set(job.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert len(job.name) <= 128
    for path in (job.working_directory, job.standard_output):
        tail = path.removeprefix("/tmp/jobs/")
        assert "/" not in tail and not tail.startswith(".") and ".." not in tail.split("/")
    assert job.standard_output.endswith(".%j.out")  # the template's own pattern stays
    assert job.environment["SLURM_TRIGGER_KEY"] == key  # the environment is verbatim


@pytest.mark.parametrize("field, value", [
    ("environment", {"PATH": "$PATH:/opt/bwa/bin"}),  # Slurm sets it as it is: the job finds no command
    ("environment", {"REF": "${HOME}/ref.fa"}),
    ("standard_output", "/shared/$USER/align-%j.out"),
    ("name", "align-${Stem}"),  # a template variable's name in the wrong case
    ("comment", "from ${KEY}"),
])
def test_shell_variables_where_no_shell_reads_are_refused(field, value):
    """Only the script is read by a shell: ``$PATH`` in ``environment`` or ``$USER`` in a
    path stays as those characters, and the job silently runs with them."""
    with pytest.raises(TemplateError, match=r"stays as text: no shell reads"):
        check_template(JobSubmission(script="x", **{field: value}), metadata=False)


def test_dollars_that_are_not_variables_load():
    check_template(JobSubmission(script="echo $HOME", comment="costs $5, $${key} literally", name="a-${stem}",
                                 environment={"PRICE": "$3", "LIT": "$${key}"}), metadata=False)


def test_a_long_key_in_a_path_still_makes_a_file_name():
    """S3 keys run to 1,024 bytes, file names to 255: ``align-${stem}-%j.out`` with a
    1,000-character stem made a job that FAILED at once (Slurm could not open its
    output). A long value is shortened in paths, ending in a hash of the whole value
    so that two long keys never share a file."""
    template = JobSubmission(script="x", standard_output="/tmp/jobs/align-${stem}-%j.out",
                             working_directory="/tmp/jobs/${stem}")
    a = render(template, object_variables(ObjectRef("b", "in/" + "k" * 1000 + "a.fastq.gz"), "p", "st-1"))
    b = render(template, object_variables(ObjectRef("b", "in/" + "k" * 1000 + "b.fastq.gz"), "p", "st-1"))
    for job in (a, b):
        assert all(len(part.encode()) <= 255 for part in job.standard_output.split("/"))
        assert job.standard_output.startswith("/tmp/jobs/align-kkkk") and job.standard_output.endswith("-%j.out")
        assert len(job.working_directory.rsplit("/", 1)[1]) <= 255
    assert a.standard_output != b.standard_output
    short = render(template, object_variables(ObjectRef("b", "in/s_R1.fastq.gz"), "p", "st-1"))
    assert short.standard_output == "/tmp/jobs/align-s_R1-%j.out"


@pytest.mark.parametrize("key", ["a\nb", "a%0Ab".replace("%0A", "\n"), "a\rb", "a\x00b", "a\x7fb", "a\tb", "a\x1bb"])
def test_control_characters_are_refused(key):
    with pytest.raises(UnsafeValueError, match="key contains control character"):
        values(key)


def test_metadata_control_characters_are_refused():
    with pytest.raises(UnsafeValueError, match="metadata_note"):
        values(metadata={"note": "a\nb"})


def test_environment_gets_trigger_variables_and_template_values():
    sub = JobSubmission(script="#!/bin/bash\n", environment={"PATH": "/bin", "INPUT": "${s3_uri}"})
    env = render(sub, values()).environment
    assert env["INPUT"] == "s3://bkt/reads/run1/s_R1.fastq.gz" and env["PATH"] == "/bin"
    assert env["SLURM_TRIGGER_S3_URI"] == env["INPUT"]
    assert env["SLURM_TRIGGER_VERSION_ID"] == "v1"
    assert env["SLURM_TRIGGER_PIPELINE"] == "align" and env["SLURM_TRIGGER_IDEMPOTENCY_KEY"] == "st-abc"
    assert "SLURM_TRIGGER_REGION" not in env  # unknown values are left out, not empty


def test_render_does_not_touch_the_template():
    sub = JobSubmission(script="#!/bin/bash\necho ${key}\n", environment={"A": "${key}"})
    render(sub, values())
    assert sub.script == "#!/bin/bash\necho ${key}\n" and sub.environment == {"A": "${key}"}


def test_check_template_names_the_unknown_variable():
    with pytest.raises(TemplateError, match=r"unknown template variable \$\{nope\} in 'script'"):
        check_template(JobSubmission(script="echo ${nope}"), metadata=False)
    with pytest.raises(TemplateError, match=r"\$\{colour\} in 'environment.X'"):
        check_template(JobSubmission(script="x", environment={"X": "${colour}"}), metadata=False)


def test_metadata_needs_opt_in():
    sub = JobSubmission(script="echo ${metadata_run_id}")
    with pytest.raises(TemplateError, match="metadata: true"):
        check_template(sub, metadata=False)
    check_template(sub, metadata=True)


def test_missing_metadata_at_render_is_an_error():
    with pytest.raises(TemplateError, match=r"\$\{metadata_run_id\}"):
        render(JobSubmission(script="echo ${metadata_run_id}"), values())


def test_no_variables_where_they_cannot_be_quoted():
    with pytest.raises(TemplateError, match="partition"):
        check_template(JobSubmission(script="x", partition="${bucket}"), metadata=False)


def test_bad_environment_name():
    with pytest.raises(TemplateError, match="not a valid shell name"):
        check_template(JobSubmission(script="x", environment={"A-B": "1"}), metadata=False)


def test_a_script_variable_becomes_a_reference_never_the_value():
    job = render(JobSubmission(script='#!/bin/bash\nx ${key} "${key}"\n'), values("a b $(id)"))
    assert job.script == '#!/bin/bash\nx "${SLURM_TRIGGER_KEY}" "${SLURM_TRIGGER_KEY}"\n'
    assert job.environment["SLURM_TRIGGER_KEY"] == "a b $(id)"


def test_every_variable_has_its_environment_variable():
    known = values("a/b.c.gz", metadata={"Run-Id": "r7"})
    env = render(JobSubmission(script="#!/bin/bash\ntrue\n"), known).environment
    assert env["SLURM_TRIGGER_DIRNAME"] == "a" and env["SLURM_TRIGGER_BASENAME"] == "b.c.gz"
    assert env["SLURM_TRIGGER_STEM"] == "b" and env["SLURM_TRIGGER_EXTENSION"] == ".c.gz"
    assert env["SLURM_TRIGGER_METADATA_RUN_ID"] == "r7"
    for var in VARIABLES:
        assert env.get(env_name(var), "") == known[var]


def test_a_referenced_variable_is_set_even_when_empty():
    """``set -u`` scripts must not die on an unknown region: the reference is always defined."""
    job = render(JobSubmission(script="#!/bin/bash\nset -u\necho ${region}\n"), values())
    assert job.environment["SLURM_TRIGGER_REGION"] == ""
    assert "SLURM_TRIGGER_EVENT_TIME" not in job.environment  # not referenced, not known


def test_reserved_environment_names():
    with pytest.raises(TemplateError, match="reserved"):
        check_template(JobSubmission(script="x", environment={"SLURM_TRIGGER_KEY": "x"}), metadata=False)


def test_size_must_be_digits():
    with pytest.raises(UnsafeValueError, match="size"):
        object_variables(ObjectRef("b", "k", size="1; id"), "p", "st-x")  # type: ignore[arg-type]
