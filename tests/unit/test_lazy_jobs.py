"""A listing's jobs are parsed lazily; each version's cheap ``job_key`` must agree with
the full parse, or the tracker would miss (or repeat) state changes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_trigger.slurm.client import decode
from slurm_trigger.slurm.dialects import DIALECTS
from slurm_trigger.slurm.models import Job, JobKey, JobsPage, LazyJobs, job_key

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


@pytest.mark.parametrize("path", LISTINGS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_decoding_only_the_fields_read_parses_the_same_jobs(path: Path) -> None:
    dialect = DIALECTS[path.parent.name]
    content = path.read_bytes()
    typed = dialect.parse_jobs(200, decode(content, dialect.decode_jobs))
    plain = dialect.parse_jobs(200, decode(content))
    assert list(typed.jobs) == list(plain.jobs)
    assert (typed.changed, typed.last_update) == (plain.changed, plain.last_update)


def test_an_answer_of_another_shape_is_decoded_plainly() -> None:
    dialect = DIALECTS["v0.0.42"]
    assert decode(b'{"jobs": "nope", "errors": [{"error_number": 9000}]}', dialect.decode_jobs) == {
        "jobs": "nope", "errors": [{"error_number": 9000}]
    }
    answer = decode(b'{"errors": [{"error_number": 1007}], "warnings": []}', dialect.decode_jobs)
    assert answer.get("errors") == [{"error_number": 1007}] and answer.get("last_update") is None


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
