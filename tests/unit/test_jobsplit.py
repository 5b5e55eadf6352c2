"""A ``GET /jobs`` answer decoded job by job as it streams in (``jobsplit`` via the
client's ``read_answer``) reads exactly as the whole body decoded at once did, on every
recorded version pretty-printed (as slurmrestd sends it) and compact, whatever the chunk
boundaries; and what cannot be split is read whole, with the same result and errors."""
from __future__ import annotations

import io
import json
import secrets
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import msgspec
import pytest
import requests

from slurm_trigger.slurm import client as client_module
from slurm_trigger.slurm import jobsplit
from slurm_trigger.slurm.auth import Token
from slurm_trigger.slurm.client import decode, read_answer, redact
from slurm_trigger.slurm.dialects import DIALECTS, Dialect, JobsAnswer
from slurm_trigger.slurm.jobsplit import split_jobs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LISTINGS = sorted(  # every recorded answer of /jobs or /job/<id>, of every version
    p for d in ("recorded", "reference") for p in (FIXTURES / d).glob("v0.0.*/job*.json")
    if not p.name.startswith("job-states") and "jobs" in json.loads(p.read_text())
)
RECORDED = FIXTURES / "recorded"
FORMS: dict[str, Callable[[Any], bytes]] = {
    "compact": lambda data: json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(),
    "python": lambda data: json.dumps(data).encode(),  # ", " and ": "
    "pretty4": lambda data: json.dumps(data, indent=4, ensure_ascii=False).encode(),
}


def jwt() -> Token:
    """A JWT-long token, new per test (the client redacts only what long)."""
    return Token(".".join(secrets.token_urlsafe(n) for n in (20, 60, 32)), "a test")


TOKEN = jwt()


def response(body: bytes, status: int = 200) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp.raw = status, io.BytesIO(body)
    return resp


def outcome(dialect: Dialect, body: Any) -> Any:
    """What the client makes of a decoded answer: its page and envelope, or the error."""
    try:
        page = dialect.parse_jobs(200, body)
    except Exception as exc:  # the same error, the same words
        return type(exc), str(exc)
    envelope = None if body is None else [body.get(k) for k in ("errors", "warnings", "last_update")]
    return list(page.jobs), page.changed, page.last_update, envelope


def whole(body: bytes, dialect: Dialect, token: Token = TOKEN) -> Any:
    """The answer as the client read it before: the whole body, redacted, decoded."""
    return decode(redact(body, token), dialect.decode_jobs)


def streamed(body: bytes, dialect: Dialect, token: Token = TOKEN, status: int = 200) -> Any:
    return read_answer(response(body, status), token, dialect.decode_jobs, dialect.decode_job_list)[0]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Read the body in chunks of ``n`` bytes, each split as it comes."""
    def use(n: int) -> None:
        monkeypatch.setattr(client_module, "_READ_CHUNK", n)
        monkeypatch.setattr(jobsplit, "BATCH", 1)
    return use


def split_whole(body: bytes, dialect: Dialect, chunks: list[bytes]) -> tuple[list[Any], Any]:
    """``split_jobs`` over ``chunks``: the jobs split off and the rest decoded."""
    jobs, rest = split_jobs(chunks, dialect.decode_job_list)
    return jobs, decode(rest, dialect.decode_jobs)


def version_of(path: Path) -> str:
    return path.parent.name


@pytest.mark.parametrize("form", ["pretty"] + list(FORMS))
@pytest.mark.parametrize("path", LISTINGS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_every_recorded_answer_reads_the_same_and_splits_into_every_job(path: Path, form: str,
                                                                      small_chunks: Callable[[int], None]) -> None:
    dialect = DIALECTS[version_of(path)]
    body = path.read_bytes() if form == "pretty" else FORMS[form](json.loads(path.read_text()))
    want = outcome(dialect, whole(body, dialect))
    for size in (1 << 20, 4096, 333):
        small_chunks(size)
        assert outcome(dialect, streamed(body, dialect)) == want
    count = len(json.loads(body)["jobs"])
    jobs, envelope = split_whole(body, dialect, [body])
    if count and path.parent.parent.name == "recorded":  # slurmrestd's answers: every job split off
        assert len(jobs) == count and isinstance(envelope, JobsAnswer) and envelope.jobs == []


@pytest.mark.parametrize("form", ["pretty", "compact"])
def test_a_chunk_boundary_at_every_byte(form: str) -> None:
    body = json.loads((RECORDED / "v0.0.42" / "jobs.json").read_text())
    body["jobs"] = body["jobs"][:2]
    body["jobs"][1]["comment"] = "ジョブ ✓"
    content = json.dumps(body, indent=2).encode() if form == "pretty" else FORMS["compact"](body)
    dialect = DIALECTS["v0.0.42"]
    want = dialect.decode_jobs(content)
    jobsplit_batch, jobsplit.BATCH = jobsplit.BATCH, 1
    try:
        for cut in range(1, len(content)):
            jobs, envelope = split_whole(content, dialect, [content[:cut], content[cut:]])
            assert len(jobs) == 2 and jobs == want.jobs, cut
            assert envelope.jobs == [] and envelope.get("last_update") == want.get("last_update"), cut
        jobs, _ = split_whole(content, dialect, [content[i:i + 1] for i in range(len(content))])
        assert jobs == want.jobs
    finally:
        jobsplit.BATCH = jobsplit_batch


def listing(version: str, jobs: list[dict[str, Any]], form: str = "compact") -> bytes:
    body = json.loads((RECORDED / version / "jobs.json").read_text())
    body["jobs"] = jobs
    return json.dumps(body, indent=2).encode() if form == "pretty" else FORMS[form](body)


def recorded_job(version: str = "v0.0.42", **fields: Any) -> dict[str, Any]:
    job = json.loads((RECORDED / version / "jobs.json").read_text())["jobs"][0]
    return {**job, **fields}


@pytest.mark.parametrize("form", ["compact", "python", "pretty"])
def test_nested_objects_that_open_like_a_job_are_inside_it(form: str, small_chunks: Callable[[int], None]) -> None:
    """Nested objects whose first key is the job's first key (compact, they match the
    delimiter) end pieces that do not decode: the piece grows to the job's real end."""
    nested = {"account": {"account": "inner", "x": [{"account": 1}, {"account": {"account": 2}}]}}
    jobs = [recorded_job(job_id=10 + i, extra=nested, more=[{"account": "a"}] * 3) for i in range(5)]
    content = listing("v0.0.42", jobs, form)
    dialect = DIALECTS["v0.0.42"]
    split, envelope = split_whole(content, dialect, [content])
    assert [j.job_id for j in split] == [10, 11, 12, 13, 14] and envelope.jobs == []
    for size in (64, 1000):
        small_chunks(size)
        assert outcome(dialect, streamed(content, dialect)) == outcome(dialect, whole(content, dialect))


def test_strings_that_hold_a_jobs_opening_are_only_text(small_chunks: Callable[[int], None]) -> None:
    tricky = ['{"account": "x"}, {"account":', '], "jobs": [{"account": ', '\\", {"account": \\"',
              "\u2028 ジョブ {\"account\":\n      \"x\"", '"jobs": [', "}]}"]
    jobs = [recorded_job(job_id=20 + i, comment=text, name=text) for i, text in enumerate(tricky)]
    dialect = DIALECTS["v0.0.42"]
    for form in ("compact", "python", "pretty"):
        content = listing("v0.0.42", jobs, form)
        split, envelope = split_whole(content, dialect, [content])
        assert [(j.job_id, j.comment) for j in split] == [(20 + i, t) for i, t in enumerate(tricky)]
        assert envelope.jobs == []
        small_chunks(7)
        assert outcome(dialect, streamed(content, dialect)) == outcome(dialect, whole(content, dialect))


def test_the_envelope_is_read_wherever_the_jobs_are() -> None:
    """v0.0.38 lists its jobs last, v0.0.40+ first: errors, warnings and last_update are
    read as from the whole body, and 22.05's "no change" path stays."""
    for version in ("v0.0.38", "v0.0.42"):
        dialect = DIALECTS[version]
        content = (RECORDED / version / "jobs.json").read_bytes()
        assert outcome(dialect, streamed(content, dialect)) == outcome(dialect, whole(content, dialect))
    dialect = DIALECTS["v0.0.38"]
    unchanged = json.dumps({"meta": {}, "errors": [], "warnings": [{"description": "No job changes since last update"}],
                            "jobs": []}).encode()
    page = dialect.parse_jobs(200, streamed(unchanged, dialect))
    assert page.changed is False and list(page.jobs) == []
    assert dialect.parse_jobs(304, read_answer(response(b"", 304), TOKEN, dialect.decode_jobs, dialect.decode_job_list)[0]).changed is False
    errors = b'{"errors": [{"error_number": 1007, "error": "Protocol authentication error"}], "jobs": [], "warnings": []}'
    assert streamed(errors, dialect).get("errors") == [{"error_number": 1007, "error": "Protocol authentication error"}]


@pytest.mark.parametrize("content", [
    b"", b"<html><body>502 Bad Gateway</body></html>", b"[1, 2]", b'{"jobs": "nope", "errors": [{"error_number": 9000}]}',
    b'{"jobs": []}', b'{"jobs": [], "last_update": {"set": true, "infinite": false, "number": 5}}',
    b'{"meta": {"jobs": [{"account": "", "job_id": 1}]}, "jobs": [{"account": "", "job_id": 2}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"job_id": 2, "account": ""}, {"account": "", "job_id": 3}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": "two"}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": 2}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "jo',
    b'{"jobs": [{"account": "", "job_id": 1} {"account": "", "job_id": 2}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, x, {"account": "", "job_id": 2}]}',
    b'{"jobs": [{"account": "", "job_id": 1}], "jobs": [{"account": "", "job_id": 2}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": "two"}], "jobs": [{"account": "", "job_id": 2}]}',
    b'{"jobs": [], "jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": 2}]}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": 2}], "meta": {"jobs": [{"account": ""}]}}',
    b'{"jobs": [{"account": "", "job_id": 1}, {"account": "", "job_id": 2}], "meta": {"jobs": [{"account": ""}]',
], ids=["empty", "html", "array", "jobs not a list", "no jobs", "no jobs, last_update", "jobs key nested first",
        "another first key", "a job of another shape", "cut after a job", "cut mid-job", "no comma", "garbage between",
        "jobs twice", "jobs twice, not split", "jobs twice, the first empty", "jobs in the tail's meta", "cut in the tail"])
def test_what_does_not_split_reads_as_the_whole_body(content: bytes, small_chunks: Callable[[int], None]) -> None:
    dialect = DIALECTS["v0.0.42"]
    want = outcome(dialect, whole(content, dialect))
    for size in (1 << 20, 5):
        small_chunks(size)
        assert outcome(dialect, streamed(content, dialect)) == want
        # and any other status is read whole, as before
        assert outcome(dialect, streamed(content, dialect, status=500)) == want


def test_a_job_of_another_shape_stops_the_splitting_and_the_rest_reads_as_before(
        small_chunks: Callable[[int], None]) -> None:
    """A job that does not decode is no split: after ``MAX_TRIES`` candidates the rest of
    the body is read whole and gives the error it always gave, naming the field."""
    jobs = [recorded_job(job_id=i) for i in range(1, 200)]
    jobs[2]["job_id"] = "three"
    content = listing("v0.0.42", jobs)
    dialect = DIALECTS["v0.0.42"]
    want = outcome(dialect, whole(content, dialect))
    assert want[0] is msgspec.ValidationError and "$.job_id" in want[1]
    for size in (1 << 20, 4096):
        small_chunks(size)
        assert outcome(dialect, streamed(content, dialect)) == want
    split, rest = split_jobs([content], dialect.decode_job_list)
    assert [j.job_id for j in split] == [1, 2] and len(rest) > len(content) * 0.95


def test_a_cut_body_reads_as_no_answer_as_before() -> None:
    dialect = DIALECTS["v0.0.42"]
    content = listing("v0.0.42", [recorded_job(job_id=i) for i in range(1, 4)], "pretty")
    for cut in (len(content) // 2, len(content) - 3):
        assert streamed(content[:cut], dialect) is None and whole(content[:cut], dialect) is None


def test_an_echoed_token_is_redacted_as_in_the_whole_body(small_chunks: Callable[[int], None]) -> None:
    """A debug proxy may echo the headers into the answer: the token is never in what the
    client keeps, wherever it appears (a job's comment here), also across chunks."""
    token = jwt()
    jobs = [recorded_job(job_id=1), recorded_job(job_id=2, comment=f"echo {token.reveal()}"), recorded_job(job_id=3)]
    content = listing("v0.0.42", jobs, "pretty")
    dialect = DIALECTS["v0.0.42"]
    for size in (1 << 20, 50):
        small_chunks(size)
        body = streamed(content, dialect, token)
        assert outcome(dialect, body) == outcome(dialect, whole(content, dialect, token))
        assert [j.comment for j in dialect.parse_jobs(200, body).jobs][1] == "echo ***"
        assert token.reveal() not in repr(body)


def test_a_big_listing_never_sits_in_memory_whole() -> None:
    """The point: 100,000 jobs are 547 MB of JSON. Traced, reading 3,000 jobs keeps what
    the jobs decode to and about a chunk, far from the body's size."""
    dialect = DIALECTS["v0.0.42"]
    job = recorded_job()
    content = listing("v0.0.42", [dict(job, job_id=1000 + i) for i in range(3000)], "pretty")
    tracemalloc.start()
    try:
        body = streamed(content, dialect)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [j.job_id for j in body.jobs] == list(range(1000, 4000))
    assert len(content) > 20 * 2**20 and peak < len(content) / 3, (peak, len(content))
