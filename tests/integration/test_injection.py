"""No shell from any key, in any template placement, on the REAL local Slurm (every API
version served).

One pipeline holds every placement that loads (each writes what it got to its own file);
each hostile key becomes one job through a real-shaped, URL-encoded S3 notification, the
pipeline loader and the trigger's own rendering. The files the job wrote are read back
and compared byte for byte, and the canary each key would create is looked for where
the key's command would really write it (the job's view of the path, mapped through the
chroot's root). Placements that cannot be safe are refused when the pipeline loads.
Jobs: one per key per version (10 keys), counted in Slurm by their idempotency key.
"""
from __future__ import annotations

import shutil
import textwrap
import time
import uuid
from typing import Any
from urllib.parse import quote_plus

import pytest

from slurm_trigger import pipelines
from slurm_trigger.idempotency import idempotency_key
from slurm_trigger.s3events import from_notification
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import SlurmClient
from slurm_trigger.slurm.auth import StaticToken
from slurm_trigger.slurm.transport import build_session
from slurm_trigger.trigger import render_job

pytestmark = pytest.mark.real_slurm

KEYS = [
    "in/$(touch CANARY)",
    "in/`touch CANARY`",
    "in/a; touch CANARY && touch CANARY | touch CANARY",
    "in/it's \"quoted\" \\ back\\slash",
    "in/a[$(touch CANARY)]",
    "in/odd ~!@#%^&=+,{}[]<>?|\u00a0\u2028\u202e\ufeff",
    "in/\u00fcnic\u00f8de \u2603 \U0001f600",
    "in/with  spaces and+plus%20",
    "in/*",
    "in/" + "k" * 1021,
]

# file suffix -> (script line writing to "$O.<suffix>", expected bytes for key K)
PLACEMENTS = {
    "bare": ("printf '%s' ${key} > \"$O.bare\"", "{key}"),
    "dquote": ("printf '%s' \"${key}\" > \"$O.dquote\"", "{key}"),
    "dquote-text": ("printf '%s' \"<${key}>\" > \"$O.dquote-text\"", "<{key}>"),
    "heredoc": ("cat > \"$O.heredoc\" <<EOF\n${key}\nEOF", "{key}\n"),
    "backticks": ("printf '%s' \"`printf '%s' \"${key}\"`\" > \"$O.backticks\"", "{key}"),
    "subst": ("printf '%s' \"$(printf '%s' ${key})\" > \"$O.subst\"", "{key}"),
    "dbracket": ("[[ ${key} == \"${key}\" && ${key} =~ ${key} ]] && printf '%s' ${key} > \"$O.dbracket\"", "{key}"),
    "case": ("case ${key} in ${key}) printf '%s' ${key} > \"$O.case\";; *) : > \"$O.case\";; esac", "{key}"),
    "assign": ("K=${key}; printf '%s' \"$K\" > \"$O.assign\"", "{key}"),
    "array": ("A=(${key} \"${key}\"); printf '%s|%s|%d' \"${A[0]}\" \"${A[1]}\" \"${#A[@]}\" > \"$O.array\"",
              "{key}|{key}|2"),
    "bash-c": ("bash -c 'printf \"%s\" \"$1\"' _ ${key} > \"$O.bash-c\"", "{key}"),
    "arith": ("echo $(( ${size} + 1 )) > \"$O.arith\"", "4\n"),
    "env": ("printf '%s' \"$SLURM_TRIGGER_KEY\" > \"$O.env\"", "{key}"),
    # unversioned bucket: the version id is empty, and set all the same (the script runs with set -u)
    "empty": ("printf '[%s]' \"${version_id}\" > \"$O.empty\"", "[]"),
    "metadata": ("printf '%s' ${metadata_note} > \"$O.metadata\"", "{key}"),  # user metadata, as hostile
}

# Placements a pipeline author may write that are refused when the pipeline loads.
REFUSED = {
    "single quotes": "printf '%s' '${key}'",
    "quoted heredoc": "cat <<'EOF'\n${key}\nEOF",
    "arithmetic": "echo $(( ${key} ))",
    "[[ -eq ]]": "[[ ${key} -eq 0 ]]",
    "eval": 'eval "printf %s ${key}"',
    "bash -c": 'bash -c "printf %s ${key}"',
    "heredoc into bash": "bash <<EOF\nprintf %s ${key}\nEOF",
}

PIPELINE = """
name: {name}
metadata: true
match: {{prefix: "in/"}}
job:
  name: inject-${{basename}}
  script: |
{script}
  partition: debug
  working_directory: {workdir}
  standard_output: {outdir}/%j.out
  standard_error: {outdir}/%j.err
  environment: {{PATH: /usr/local/bin:/usr/bin:/bin, OUT_DIR: {outdir}}}
  time_limit: 2
  comment: injection test
"""
WAIT_SECONDS = 180


def _pipeline(name: str, body: str, target: Any, outdir: str) -> str:
    script = "#!/bin/bash\nset -u\n" + body + "\n"
    return PIPELINE.format(name=name, script=textwrap.indent(script, "    "), workdir=target.workdir, outdir=outdir)


def _notification(key: str) -> dict[str, Any]:
    """A direct S3 notification, its key URL-encoded as S3 does."""
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "bkt", "arn": "arn:aws:s3:::bkt"},
               "object": {"key": quote_plus(key, safe="/"), "size": 3, "eTag": uuid.uuid4().hex,  # unique: jobs
                          "sequencer": "00A1"}},  # of earlier runs may still be in Slurm
    }]}


def _client(target: Any) -> SlurmClient:
    return SlurmClient(target.url, StaticToken(target.token()), user=target.user,
                       session=build_session(Settings(retries=2)), api_version=target.version)


def test_every_placement_gets_every_key_byte_for_byte_and_runs_nothing(slurm_target, tmp_path):
    outdir = f"{slurm_target.workdir}/inject-{uuid.uuid4().hex[:12]}"
    host_out = slurm_target.host_path(outdir)
    host_out.mkdir(mode=0o777)
    host_out.chmod(0o777)  # the chroot's job user is not root
    canary = f"{outdir}/canary"  # where "touch CANARY" in a key would write, in the job's view
    folder = tmp_path / "pipelines"
    folder.mkdir()
    body = 'O="$OUT_DIR/$SLURM_JOB_ID"\n' + "\n".join(line for line, _ in PLACEMENTS.values())
    (folder / "inject.yaml").write_text(_pipeline("inject", body, slurm_target, outdir))
    for i, refused in enumerate(REFUSED.values()):
        (folder / f"refused-{i}.yaml").write_text(_pipeline(f"refused-{i}", refused, slurm_target, outdir))

    loaded, errors = pipelines.load_all(folder)
    assert [p.name for p in loaded] == ["inject"]
    assert len(errors) == len(REFUSED)
    for error in errors:  # names the file, the pipeline, the variable and the env var to use
        assert "pipeline 'refused-" in str(error) and "${key} on line" in str(error)
        assert "SLURM_TRIGGER_KEY" in str(error)

    client = _client(slurm_target)
    jobs: dict[int, tuple[str, str]] = {}  # job id -> key, idempotency key
    for key in (k.replace("CANARY", canary) for k in KEYS):
        [ref] = from_notification(_notification(key))
        assert ref.key == key
        job = render_job(ref, loaded[0], metadata={"note": key})
        assert key not in job.script  # the value never becomes script text
        result = client.submit(job)
        jobs[result.job_id] = (key, idempotency_key("inject", ref))

    deadline = time.monotonic() + WAIT_SECONDS
    pending = set(jobs)
    while pending and time.monotonic() < deadline:
        pending = {j for j in pending if not client.get_job(j).is_final}
        time.sleep(0.5)
    for job_id, (key, _) in jobs.items():
        job = client.get_job(job_id)
        err = slurm_target.host_path(f"{outdir}/{job_id}.err")
        assert job.state == "COMPLETED", (job, key, err.read_text() if err.exists() else "")
        for suffix, (_, expected) in PLACEMENTS.items():
            got = slurm_target.host_path(f"{outdir}/{job_id}.{suffix}").read_bytes()
            assert got == expected.format(key=key).encode(), (suffix, key)
    # one job per key, counted in Slurm by the idempotency key in its comment
    found = [len(client.find_jobs_by_comment(ikey)) for _, ikey in jobs.values()]
    assert found == [1] * len(KEYS), found
    assert not slurm_target.host_path(canary).exists()
    assert sorted(p.name for p in host_out.iterdir() if "canary" in p.name) == []
    shutil.rmtree(host_out)  # kept when anything failed, for a look
