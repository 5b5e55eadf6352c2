"""A listing's jobs are parsed lazily; each version's cheap ``job_key`` must agree with
the full parse, or the tracker would miss (or repeat) state changes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.slurm.client import decode
from chalicelib.slurm.dialects import DIALECTS
from chalicelib.slurm.models import Job, JobKey, JobsPage, LazyJobs, job_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LISTINGS = sorted(  # every listing fixture that lists jobs, of every version
    p
    for d in ("recorded", "reference")
    for p in (FIXTURES / d).glob("v0.0.*/jobs*.json")
    if json.loads(p.read_text()).get("jobs")
)


@pytest.mark.parametrize("path", LISTINGS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_job_key_agrees_with_full_parse(path: Path) -> None:
    dialect = DIALECTS[path.parent.name]
    page = dialect.parse_jobs(200, decode(path.read_bytes()))
    pairs = list(page.keyed())
    assert [key for key, _ in pairs] == [job_key(job) for job in page.jobs]
    assert [parse() for _, parse in pairs] == list(page.jobs)


def test_lazy_jobs_parse_on_access_only() -> None:
    parsed: list[int] = []

    def parse(raw):  # type: ignore[no-untyped-def]
        parsed.append(raw["job_id"])
        return Job(job_id=raw["job_id"], state="RUNNING")

    jobs = LazyJobs([{"job_id": 1}, {"job_id": 2}], parse, lambda raw: JobKey(raw["job_id"], "RUNNING", None))
    keys = [key for key, _ in JobsPage(jobs).keyed()]
    assert keys == [JobKey(1, "RUNNING", None), JobKey(2, "RUNNING", None)] and parsed == []
    assert jobs[1].job_id == 2 and parsed == [2]
    assert len(jobs) == 2 and jobs == (Job(1, state="RUNNING"), Job(2, state="RUNNING"))


def test_a_tuple_page_is_keyed_from_its_jobs() -> None:
    job = Job(job_id=7, state="PENDING")
    [(key, parse)] = list(JobsPage((job,)).keyed())
    assert key == JobKey(7, "PENDING", None) and parse() is job


def test_decode_answers_none_for_what_is_not_a_json_object() -> None:
    assert decode(b"") is None and decode(b"<html>") is None and decode(b"[1]") is None
    assert decode(b'{"jobs": [], "n": 18446744073709551615}') == {"jobs": [], "n": 18446744073709551615}
