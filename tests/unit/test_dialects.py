"""Each version's translation, on answers recorded from real slurmrestd (v0.0.38,
v0.0.40–v0.0.42 from 22.05/24.11; v0.0.43–v0.0.45 from 26.05 with slurmdbd) and on answers
derived from SchedMD's reference (v0.0.39, v0.0.43)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from slurm_trigger.slurm.dialects import DIALECTS, newest, served_versions
from slurm_trigger.slurm.errors import (
    SlurmAuthError,
    SlurmBusyError,
    SlurmNotFoundError,
    SlurmRejectedError,
    SlurmUnavailableError,
)
from slurm_trigger.slurm.models import JobSubmission

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REFERENCE = FIXTURES / "reference"
RECORDED = FIXTURES / "recorded"
ALL = list(DIALECTS)
NEW = ("v0.0.43", "v0.0.44", "v0.0.45")  # recorded from Slurm 26.05


def ref(version: str, name: str) -> dict:
    return json.loads((REFERENCE / version / name).read_text())


def rec(version: str, name: str) -> dict:
    return json.loads((RECORDED / version / name).read_text())


def by_id(page) -> dict:
    return {j.job_id: j for j in page.jobs}


SUB = JobSubmission(
    script="#!/bin/bash\nexit 0\n",
    environment={"A": "1", "B": "x=y"},
    name="n",
    partition="p",
    working_directory="/w",
    standard_output="/w/o-%j.out",
    time_limit=5,
    memory_per_node=100,
    nodes=2,
    tasks=3,
    cpus_per_task=4,
    comment="c",
    extra={"qos": "high", "name": "from-extra"},
)


# ------------------------------------------------------------------ submit bodies


def test_v0038_body_has_script_on_top_and_environment_object() -> None:
    body = DIALECTS["v0.0.38"].submit_body(SUB)
    assert body["script"] == SUB.script
    job = body["job"]
    assert "script" not in job
    assert job["environment"] == {"A": "1", "B": "x=y"}
    assert job["time_limit"] == 5 and job["memory_per_node"] == 100
    assert job["nodes"] == [2, 2]


@pytest.mark.parametrize("version", ALL[1:])
def test_later_bodies_have_script_in_job_and_environment_list(version: str) -> None:
    body = DIALECTS[version].submit_body(SUB)
    assert set(body) == {"job"}
    job = body["job"]
    assert job["script"] == SUB.script
    assert job["environment"] == ["A=1", "B=x=y"]
    assert job["time_limit"] == {"set": True, "infinite": False, "number": 5}
    assert job["memory_per_node"] == {"set": True, "infinite": False, "number": 100}
    assert job["nodes"] == "2"


@pytest.mark.parametrize("version", ALL)
def test_body_common_fields_and_extra_merged(version: str) -> None:
    job = DIALECTS[version].submit_body(SUB)["job"]
    assert job["current_working_directory"] == "/w"
    assert job["standard_output"] == "/w/o-%j.out"
    assert (job["partition"], job["tasks"], job["cpus_per_task"], job["comment"]) == ("p", 3, 4, "c")
    assert job["qos"] == "high" and job["name"] == "from-extra"  # extra is raw and wins


@pytest.mark.parametrize("version", ALL)
def test_empty_environment_gets_a_path(version: str) -> None:
    job = DIALECTS[version].submit_body(JobSubmission(script="#!/bin/sh\ntrue\n"))["job"]
    env = job["environment"]
    assert env and ("PATH" in env if isinstance(env, dict) else env[0].startswith("PATH="))


# ------------------------------------------------------------------ v0.0.39 (reference)


def test_v0039_jobs_from_reference() -> None:
    page = DIALECTS["v0.0.39"].parse_jobs(200, ref("v0.0.39", "jobs.json"))
    jobs = by_id(page)
    assert page.changed and page.last_update is None
    ok = jobs[101]
    assert (ok.state, ok.exit_code, ok.signal, ok.reason) == ("COMPLETED", 0, None, None)
    assert ok.submit_time == datetime(2026, 11, 25, 3, 40, tzinfo=timezone.utc)
    assert ok.end_time == datetime(2026, 11, 25, 3, 40, 4, tzinfo=timezone.utc)
    assert ok.standard_output == "/home/ec2-user/ok-101.out"
    assert ok.comment == "ref v0.0.39 ok" and ok.user == "ec2-user" and ok.partition == "queue1"
    assert (jobs[102].state, jobs[102].exit_code, jobs[102].reason) == ("FAILED", 3, "NonZeroExitCode")
    assert (jobs[103].exit_code, jobs[103].signal) == (None, 9)
    assert jobs[104].state == "CANCELLED"
    assert (jobs[105].state, jobs[105].exit_code, jobs[105].end_time) == ("RUNNING", None, None)
    pending = jobs[106]
    assert (pending.state, pending.reason, pending.start_time, pending.end_time) == (
        "PENDING", "Resources", None, None)
    assert (jobs[107].state, jobs[107].state_flags, jobs[107].is_final) == (
        "RUNNING", ("COMPLETING",), False)


def test_v0039_ping_down_and_submit() -> None:
    d = DIALECTS["v0.0.39"]
    assert d.ping_down(ref("v0.0.39", "ping.json")) == []
    assert d.ping_down(ref("v0.0.39", "ping-down.json")) == ["ip-10-0-0-5"]
    result = d.parse_submit(ref("v0.0.39", "submit-response.json"))
    assert (result.job_id, result.step_id) == (108, "batch")


# ------------------------------------------------------------------ v0.0.43 (reference)


def test_v0043_jobs_from_reference() -> None:
    page = DIALECTS["v0.0.43"].parse_jobs(200, ref("v0.0.43", "jobs.json"))
    jobs = by_id(page)
    assert page.changed and page.last_update == 1795578060
    assert (jobs[201].state, jobs[201].exit_code, jobs[201].standard_output) == (
        "COMPLETED", 0, "/home/ec2-user/ok-201.out")
    assert (jobs[202].state, jobs[202].exit_code, jobs[202].signal) == ("FAILED", 3, None)
    assert (jobs[203].state, jobs[203].exit_code, jobs[203].signal) == ("CANCELLED", None, 15)
    assert (jobs[204].state, jobs[204].exit_code, jobs[204].end_time) == ("RUNNING", None, None)
    assert (jobs[205].state, jobs[205].state_flags, jobs[205].reason) == (
        "PENDING", ("REQUEUED",), "BeginTime")
    assert (jobs[206].state, jobs[206].state_flags, jobs[206].is_final) == (
        "COMPLETED", ("COMPLETING",), True)


def test_v0043_unchanged_is_200_empty_with_warning() -> None:
    page = DIALECTS["v0.0.43"].parse_jobs(200, ref("v0.0.43", "jobs-update-time-unchanged.json"))
    assert (page.jobs, page.changed) == ((), False)
    assert DIALECTS["v0.0.43"].jobs_params(1795578060) == {"update_time": "1795578060"}


def test_v0043_cancel_status_entries() -> None:
    d = DIALECTS["v0.0.43"]
    d.check_cancel(ref("v0.0.43", "cancel-response.json"), 201)
    d.check_cancel(ref("v0.0.43", "cancel-finished-response.json"), 201)  # already ended: fine
    with pytest.raises(SlurmNotFoundError) as exc:
        d.check_cancel(ref("v0.0.43", "cancel-not-found-response.json"), 999999)
    assert exc.value.errors[0]["error_number"] == 2017
    with pytest.raises(SlurmRejectedError, match="could not cancel job 201"):
        d.check_cancel(ref("v0.0.43", "cancel-denied-response.json"), 201)


def test_v0043_ping_and_submit() -> None:
    d = DIALECTS["v0.0.43"]
    assert d.ping_down(ref("v0.0.43", "ping.json")) == []
    assert d.ping_down(ref("v0.0.43", "ping-down.json")) == ["ip-10-0-0-5"]
    assert d.parse_submit(ref("v0.0.43", "submit-response.json")).job_id == 207


# ------------------------------------------------------------------ negotiation


def test_negotiation_picks_newest_known() -> None:
    assert served_versions(ref("v0.0.39", "openapi-paths.json")) == ["v0.0.37", "v0.0.38", "v0.0.39"]
    assert newest(served_versions(ref("v0.0.39", "openapi-paths.json"))) == "v0.0.39"
    assert newest(served_versions(ref("v0.0.43", "openapi-paths.json"))) == "v0.0.43"
    assert newest(["v0.0.41", "v0.0.44", "v0.0.43"]) == "v0.0.44"  # 25.11 (ParallelCluster 3.15/3.16)
    assert newest(["v0.0.42", "v0.0.45", "v0.0.46"]) == "v0.0.45"  # a newer one than we know
    assert newest(["v0.0.36", "v0.0.37"]) is None


def test_26_05_serves_v0042_to_v0045_and_slurmdb() -> None:
    doc = {"paths": {p: {} for p in rec("v0.0.45", "openapi-paths.json")}}
    assert served_versions(doc) == ["v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"]
    assert served_versions(doc, "slurmdb") == ["v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"]
    assert newest(served_versions(doc)) == "v0.0.45"
    no_dbd = {"paths": {p: {} for p in rec("v0.0.42", "openapi-paths.json")}}
    assert served_versions(no_dbd, "slurmdb") == []


# ------------------------------------------------------------------ v0.0.43–v0.0.45 (26.05, recorded)


@pytest.mark.parametrize("version", NEW)
def test_stdout_expanded_is_the_path_and_standard_output_the_pattern(version: str) -> None:
    raw = rec(version, "job-completed.json")["jobs"][0]
    assert raw["standard_output"].endswith("/%j.out")  # the raw pattern from v0.0.43
    job = DIALECTS[version].parse_job(raw)
    assert job.standard_output == raw["stdout_expanded"] == f"/tmp/slurm-trigger-jobs/{job.job_id}.out"
    assert (job.state, job.exit_code) == ("COMPLETED", 0)


@pytest.mark.parametrize("version", ("v0.0.44", "v0.0.45"))
def test_v0044_step_id_object_and_submit_line_change_nothing(version: str) -> None:
    raw = rec(version, "job-running.json")["jobs"][0]
    assert raw["step_id"]["step_id"] == "entire" and "submit_line" in raw
    job = DIALECTS[version].parse_job(raw)
    assert (job.state, job.exit_code, job.end_time) == ("RUNNING", None, None)
    assert DIALECTS[version].parse_submit(rec(version, "submit.json")).step_id == "batch"


@pytest.mark.parametrize("version", ("v0.0.44", "v0.0.45"))
def test_expediting_is_a_flag(version: str) -> None:
    d = DIALECTS[version]
    raw = {**rec(version, "job-pending.json")["jobs"][0], "job_state": ["PENDING", "REQUEUED", "EXPEDITING"]}
    job = d.parse_job(raw)
    assert (job.state, job.state_flags, job.is_final) == ("PENDING", ("REQUEUED", "EXPEDITING"), False)
    assert d.parse_job({**raw, "job_state": ["EXPEDITING"]}).state == "PENDING"


def test_v0045_ping_has_status_not_pinged() -> None:
    d = DIALECTS["v0.0.45"]
    up = rec("v0.0.45", "ping.json")
    assert "pinged" not in up["pings"][0] and up["pings"][0]["status"] == "No error"
    assert [d.ping_status(p) for p in up["pings"]] == ["UP"] and d.ping_down(up) == []
    bad = rec("v0.0.45", "error-bad-token-ping.json")  # 200, responding false
    assert bad["pings"][0]["status"] == "Protocol authentication error"
    assert d.ping_down(bad) == ["vm"]
    for version in ("v0.0.42", "v0.0.43", "v0.0.44"):
        assert DIALECTS[version].ping_down(rec(version, "error-bad-token-ping.json")) == ["vm"]
        assert [DIALECTS[version].ping_status(p) for p in rec(version, "ping.json")["pings"]] == ["UP"]


@pytest.mark.parametrize("version", NEW)
@pytest.mark.parametrize("name,status,code", [
    ("submit-rejected-no-environment.json", 422, 2127),  # 24.11: 500 / 2019
    ("submit-rejected-no-cwd.json", 422, 2063),  # 24.11: 500
    ("submit-rejected-no-script.json", 422, 9000),
    ("submit-rejected.json", 500, 9208),  # environment as a string
])
def test_26_05_rejections_are_permanent(version: str, name: str, status: int, code: int) -> None:
    index = rec(version, "index.json")
    errors = rec(version, name)["errors"]
    assert index[name]["status"] == status and code in [e["error_number"] for e in errors]
    assert DIALECTS[version].classify(status, errors) is SlurmRejectedError


@pytest.mark.parametrize("version", NEW)
def test_accounting_records(version: str) -> None:
    d = DIALECTS[version]
    assert d.accounting and d.accounting_path("job/5") == f"/slurmdb/{version}/job/5"
    raw = rec(version, "slurmdb-job-completed.json")["jobs"][0]
    assert isinstance(raw["time"]["end"], int) and raw["state"]["current"] == ["COMPLETED"]
    job = d.parse_accounting_job(raw)
    assert (job.state, job.exit_code, job.reason, job.user) == ("COMPLETED", 0, None, "ciuser")
    assert job.end_time == datetime.fromtimestamp(raw["time"]["end"], tz=timezone.utc)
    assert job.comment == raw["comment"]["job"] == "slurm-trigger recorded fixture"
    assert job.standard_output == raw["stdout_expanded"]
    failed = d.parse_accounting_job(rec(version, "slurmdb-job-failed.json")["jobs"][0])
    assert (failed.state, failed.exit_code, failed.signal) == ("FAILED", 3, None)
    assert d.accounting_jobs_params("ciuser", 1700000000) == {
        "start_time": "uts1700000000", "skip_steps": "true", "users": "ciuser"}
    assert d.accounting_jobs_params("ciuser", 1, "align-s1")["job_name"] == "align-s1"
    assert "job_name" not in d.accounting_jobs_params("ciuser", 1, "a,b")  # a list to slurmdbd
    bad = rec(version, "slurmdb-error-bad-token.json")
    assert rec(version, "index.json")["slurmdb-error-bad-token.json"]["status"] == 502
    assert d.classify(502, bad["errors"]) is SlurmAuthError  # fetch the token again once
    assert d.classify(502, []) is SlurmUnavailableError


def test_no_accounting_before_v0040() -> None:
    assert not DIALECTS["v0.0.38"].accounting and not DIALECTS["v0.0.39"].accounting


# ------------------------------------------------------------------ update_time forms


@pytest.mark.parametrize(
    "version,expected",
    [("v0.0.38", "1700000000"), ("v0.0.39", "1700000000"), ("v0.0.40", "uts1700000000"),
     ("v0.0.41", "uts1700000000"), ("v0.0.42", "1700000000"), ("v0.0.43", "1700000000"),
     ("v0.0.44", "1700000000"), ("v0.0.45", "1700000000")],
)
def test_update_time_param(version: str, expected: str) -> None:
    assert DIALECTS[version].jobs_params(1700000000) == {"update_time": expected}
    assert DIALECTS[version].jobs_params(None) == {}


def test_v0038_304_means_unchanged() -> None:
    page = DIALECTS["v0.0.38"].parse_jobs(304, None)
    assert (page.jobs, page.changed, page.last_update) == ((), False, None)


# ------------------------------------------------------------------ error classification


@pytest.mark.parametrize(
    "version,status,errors,expected",
    [
        ("v0.0.38", 200, [], None),
        ("v0.0.38", 304, [], None),
        ("v0.0.38", 401, [], SlurmAuthError),
        # 22.05 bad/expired token: GET → -1, POST → 5005
        ("v0.0.38", 500, [{"error_number": -1, "error": "Unspecified error"}], SlurmAuthError),
        ("v0.0.38", 500, [{"error_code": 5005, "error": "Zero Bytes were transmitted or received"}], SlurmAuthError),
        # 22.05 500s that are not auth
        ("v0.0.38", 500, [{"error_code": 2000, "error": "Invalid partition name specified"}], SlurmRejectedError),
        ("v0.0.38", 500, [{"error_code": 2009, "error": "Job script not specified"}], SlurmRejectedError),
        ("v0.0.38", 500, [{"error_number": 2017, "error": "Invalid job id specified"}], SlurmNotFoundError),
        ("v0.0.38", 400, [{"error_code": 9001, "error": "Failure during parsing"}], SlurmRejectedError),
        ("v0.0.38", 400, [], SlurmRejectedError),  # text/plain "Unable to parse query."
        ("v0.0.38", 200, [{"error_code": 2015, "error": "Requested partition configuration not available now"}], SlurmRejectedError),
        ("v0.0.38", 500, [], SlurmUnavailableError),
        ("v0.0.38", 500, [{"error_number": 1001, "error": "Unable to contact slurm controller"}], SlurmUnavailableError),
        ("v0.0.42", 511, [{"error_number": 1007, "error": "Protocol authentication error"}], SlurmAuthError),
        ("v0.0.42", 500, [{"error_number": -1, "error": "Unspecified error"}], SlurmUnavailableError),
        ("v0.0.42", 404, [{"error_number": 2017}], SlurmNotFoundError),
        ("v0.0.42", 422, [{"error_number": 9000}], SlurmRejectedError),
        ("v0.0.42", 500, [{"error_number": 9208, "error": "Data parser expected a list"}], SlurmRejectedError),
        ("v0.0.42", 500, [{"error_number": 2019}], SlurmRejectedError),
        ("v0.0.42", 429, [], SlurmBusyError),
        # slurmctld's "not now", which sbatch sleeps on and sends again: no job made
        ("v0.0.38", 500, [{"error_code": 11, "error": "Resource temporarily unavailable"}], SlurmBusyError),
        ("v0.0.42", 500, [{"error_number": 2007, "error": "Slurm job queue full"}], SlurmBusyError),
        ("v0.0.42", 500, [{"error_number": 2016, "error": "Requested nodes are busy"}], SlurmBusyError),
        ("v0.0.42", 502, [], SlurmUnavailableError),
        ("v0.0.42", 503, [], SlurmUnavailableError),
        ("v0.0.43", 401, [], SlurmAuthError),
    ],
)
def test_classify(version: str, status: int, errors: list, expected) -> None:
    assert DIALECTS[version].classify(status, errors) is expected


@pytest.mark.parametrize("version, value", [("v0.0.38", 1796168439), ("v0.0.42", {"set": True, "infinite": False, "number": 1796168439})])
def test_suspend_time_is_read_and_zero_means_never(version: str, value: object) -> None:
    """Slurm sets ``suspend_time`` at each suspend and resume (0 before any): the
    tracker's eventId of a resumed RUNNING needs it (as 22.05 and 24.11 send it)."""
    state = "RUNNING" if version == "v0.0.38" else ["RUNNING"]
    dialect = DIALECTS[version]
    assert dialect.parse_job({"job_id": 1, "job_state": state, "suspend_time": value}).suspend_time == datetime(
        2026, 12, 1, 23, 40, 39, tzinfo=timezone.utc)
    never = 0 if version == "v0.0.38" else {"set": True, "infinite": False, "number": 0}
    assert dialect.parse_job({"job_id": 1, "job_state": state, "suspend_time": never}).suspend_time is None
