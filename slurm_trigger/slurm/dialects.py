"""Every wire difference between Slurm REST v0.0.38 … v0.0.45, and nothing else.

One class per version family; ``DIALECTS`` maps each version to an instance. The
client only ever asks its dialect: which path, which body, which query, what does
this answer mean (of slurmctld's ``/slurm/`` and slurmdbd's ``/slurmdb/``). Facts below
were observed on real slurmrestd (22.05.8 for v0.0.38, 24.11.5 for v0.0.40–v0.0.42,
26.05.5 with slurmdbd for v0.0.42–v0.0.45) or read from SchedMD's reference (23.02 for
v0.0.39).

Error classification (``Dialect.classify``), from Slurm's own error numbers:

* 401 (no auth headers, every version) and 511 (24.11: bad/expired token) → auth.
* 22.05 (v0.0.38) answers **500** for a bad or expired token and loses the errno on
  the way: GET endpoints report ``error_number: -1`` ("Unspecified error", e.g.
  "Failed while looking for jobs", "slurmctld config is unable to load"), POST
  job/submit reports ``error_code: 5005`` ("Zero Bytes were transmitted or
  received"). A 500 whose errors are only -1/5005 is therefore an auth failure;
  a 500 with a job error (2000 "Invalid partition name specified", 2009 "Job
  script not specified") is a rejected body, and 2017 "Invalid job id specified"
  is an unknown job (22.05 answers 500 for those too).
* 1007 "Protocol authentication error" → auth (24.11 puts it in the 511 body).
* 2017 → not found; any other 2xxx (job errors: 2019, 2063 …) or 9xxx (query or
  data-parser errors: 9000, 9202, 9208 …) → rejected, whatever the HTTP status
  (24.11 answers 500 for a malformed environment).
* 11 EAGAIN "Resource temporarily unavailable", 2007 "job queue full" (MaxJobCount),
  2016 "job creation temporarily disabled" (the three sbatch retries) and 429 → busy:
  unavailable, and certainly no job made.
* 502, 503, 504 and any other 5xx without a job/parser error → unavailable.
* Other 4xx (400 "Unable to parse query.", 404, 422) → rejected / not found.
  26.05 answers 422 where 24.11 answered 500 for the same rejected body (2127
  "Environment is missing in job", 2063 for no cwd, 2000 bad partition): rejected
  either way, since the job error number decides, not the status.
* slurmdbd (``/slurmdb/``): a bad token is **502** with 7000 "Unable to connect to
  database" (slurmrestd cannot open the slurmdbd connection as that user) → auth, so
  the token is fetched again once; the message says slurmdbd may be down instead.
* HTTP 200 with a non-empty ``errors`` array is not a success: it is classified
  the same way (22.05 creates a job *and* reports 2015 for impossible cpus).

"May Slurm have made a job?" (``Dialect.submit_maybe_made``), for a failed answer to
``POST job/submit`` that carries no ``job_id``: **no** when someone refused the request
before slurmctld acted on it: the token (401, 511, 1007), slurmrestd's parser (9xxx),
slurmctld's job checks (2xxx), slurmctld saying it is busy (11, 2007, 2016), any other
4xx, or a 429 (a rate limit never forwards).
**Maybe** for everything else: a 5xx without such a code (a proxy's 502/504 after it
forwarded, 503, a bare 500), 22.05's 500 with only 5005 "Zero Bytes were transmitted
or received" (a refused token *or* a socket that broke after slurmctld got the RPC:
the two look the same), a 404 (a version dropped by a restarted slurmrestd, or a
proxy's page: we cannot tell), and a 2xx without a job id.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence  # not typing's: isinstance is 2x faster
from datetime import datetime, timezone
from typing import Any

import msgspec

from slurm_trigger.slurm.errors import (
    SlurmAuthError,
    SlurmBusyError,
    SlurmError,
    SlurmNotFoundError,
    SlurmRejectedError,
    SlurmUnavailableError,
)
from slurm_trigger.slurm.models import (
    FINAL_STATES,
    Job,
    JobKey,
    JobsPage,
    JobSubmission,
    LazyJobs,
    SubmitResult,
)

# Slurm needs a non-empty environment (22.05: "environment must be set"; 24.11 fails
# with 2019 without one); a job file that sets none gets this.
DEFAULT_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin"}

BASE_STATES = frozenset(FINAL_STATES | {"PENDING", "RUNNING", "SUSPENDED"})

# Up to v0.0.39 job_state is one string and a flag replaces the base state
# (job_state_string() in 22.05/23.02). Map it to the base state it implies and
# keep the flag, so "COMPLETING" is not mistaken for a final state.
_FLAG_ONLY_STATES = {
    "COMPLETING": "RUNNING",
    "CONFIGURING": "RUNNING",
    "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "STOPPED": "SUSPENDED",
    "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "SPECIAL_EXIT": "PENDING",
    "REVOKED": "CANCELLED",
    "EXPEDITING": "PENDING",  # v0.0.44: an expedited requeue (a flag beside PENDING)
}

# 22.05 reports a job submitted with ``hold: true`` as an *error* 2042 next to its
# job_id (24.11 makes it a warning): informational, not a failure.
INFORMATIONAL = frozenset({2042})
NOT_FOUND = 2017
ALREADY_DONE = 2021  # "Job/step already completing or completed": cancelling is a no-op
AUTH_ERROR = 1007
DBD_CONNECTION = 7000  # slurmdbd: "Unable to connect to database" (a bad token gives it too)
# slurmctld's "not now" (EAGAIN, job queue full, job creation disabled): no job made
BUSY = frozenset({11, 2007, 2016})
_TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
_NO_CHANGE = re.compile(r"no job changes", re.IGNORECASE)


def error_codes(errors: Iterable[Mapping[str, Any]]) -> list[int]:
    """Slurm's numbers: ``error_code`` (22.05 submit) or ``error_number``."""
    codes = []
    for e in errors:
        code = e.get("error_number", e.get("error_code"))
        if isinstance(code, int):
            codes.append(code)
    return codes


def number(value: Any) -> int | None:
    """A plain integer or a ``{set, infinite, number}`` struct (decoded, or a mapping);
    unset/infinite → None."""
    kind = type(value)
    if kind is int:  # the common cases first: ~70,000 calls in a 10,000-job poll
        return value
    if kind is Number or kind is ExitCode:
        if value.infinite or not value.set:
            return None
        value = value.number
        if type(value) is int:
            return value
    elif isinstance(value, Mapping):
        if value.get("infinite") or not value.get("set", True):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def epoch(value: Any) -> int | None:
    """An epoch (plain or struct) in seconds; 0, negative and unset → None."""
    seconds = number(value)
    return seconds if seconds and seconds > 0 else None


def timestamp(value: Any) -> datetime | None:
    """An epoch (plain or struct) as an aware UTC datetime; 0 and unset → None."""
    seconds = epoch(value)
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)  # tz= costs 2.5x


def server_time(diag: Mapping[str, Any]) -> int | None:
    """slurmctld's clock when it answered ``GET /diag`` (``statistics.req_time``, plain
    or struct in every version): the tracker's cursor where ``/jobs`` has no
    ``last_update`` (v0.0.38, v0.0.39)."""
    return epoch((diag.get("statistics") or {}).get("req_time"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != "None" else None


def _struct(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


def _expand_path(path: str | None, raw: RawJob) -> str | None:
    """Replace the filename patterns 22.05 leaves unexpanded (%j %u %x %A %a %%)."""
    if not path or "%" not in path:
        return path or None
    array_job = number(raw.array_job_id) or 0
    array_task = number(raw.array_task_id)
    values = {
        "j": str(raw.job_id),
        "u": str(raw.user_name or ""),
        "x": str(raw.name or ""),
        "A": str(array_job or raw.job_id),
        "a": str(array_task) if array_task is not None else "4294967294",
        "%": "%",
    }
    return re.sub(r"%([juxAa%])", lambda m: values[m.group(1)], path)


def _default_output(raw: RawJob) -> str | None:
    """Slurm's default batch output file, which 22.05 reports as an empty string."""
    cwd = _text(raw.current_working_directory)
    if not cwd or raw.batch_flag is False:
        return None
    name = "slurm-%A_%a.out" if number(raw.array_task_id) is not None else "slurm-%j.out"
    return f"{cwd.rstrip('/')}/{name}"


class Number(msgspec.Struct, gc=False):
    """Slurm's ``{set, infinite, number}`` (counts and times from v0.0.39/v0.0.40)."""

    set: bool = True
    infinite: bool = False
    number: int | float | None = None


class Signal(msgspec.Struct, gc=False):
    id: int | Number | None = None  # (its ``name`` is not read: skipped)


class ExitCode(msgspec.Struct, gc=False):
    """``exit_code`` as v0.0.40+ send it (``{status, return_code, signal}``; ``status``
    is not read, so not decoded) or as v0.0.39 does (a ``{set, infinite, number}`` of the
    raw wait status); v0.0.38 sends an int."""

    return_code: int | Number | None = None
    signal: Signal | None = None
    set: bool = True
    infinite: bool = False
    number: int | None = None


class RawJob(msgspec.Struct, gc=False):
    """A job as slurmctld (or, mapped, slurmdbd) describes it: the fields that
    ``Dialect.parse_job`` reads, the one shape of a raw job however it was fetched
    (same names in every version; the unions are the versions' shapes). Decoding only
    these skips the rest of the job; typed, a listed job takes a few small objects
    instead of the dicts of every struct (~1.3 KB instead of ~2.6 KB a job)."""

    job_id: int
    job_state: str | list[str] | None = None
    submit_time: int | Number | None = None
    start_time: int | Number | None = None
    end_time: int | Number | None = None
    name: str | None = None
    state_reason: str | None = None
    exit_code: int | ExitCode | None = None
    partition: str | None = None
    user_name: str | None = None
    comment: str | None = None
    current_working_directory: str | None = None
    stdout_expanded: str | None = None
    standard_output: str | None = None
    batch_flag: bool | None = None
    array_job_id: int | Number | None = None
    array_task_id: int | Number | None = None
    dependency: str | None = None
    restart_cnt: int | Number | None = None
    suspend_time: int | Number | None = None  # the last suspend or resume (0: never)


def raw_job(raw: RawJob | Mapping[str, Any]) -> RawJob:
    """``raw`` as a ``RawJob`` (a mapping, e.g. a plainly decoded answer, is converted)."""
    return raw if isinstance(raw, RawJob) else msgspec.convert(raw, RawJob)


class _Fields(msgspec.Struct):
    """A decoded object that answers ``get`` and ``[]`` like the dict it stands for;
    fields Slurm did not send are ``UNSET`` and read as missing."""

    def get(self, name: str, default: Any = None) -> Any:
        value = getattr(self, name, msgspec.UNSET)
        return default if value is msgspec.UNSET else value

    def __getitem__(self, name: str) -> Any:
        value = getattr(self, name, msgspec.UNSET)
        if value is msgspec.UNSET:
            raise KeyError(name)
        return value


class JobsAnswer(_Fields):
    """What ``parse_jobs`` and error classification read of a ``GET /jobs`` (or
    ``GET /job/<id>``) answer; ``get`` for the envelope, which every answer shares."""

    jobs: list[RawJob] = []
    warnings: Any = msgspec.UNSET
    errors: Any = msgspec.UNSET
    last_update: Any = msgspec.UNSET
    job_id: Any = msgspec.UNSET


_JOBS_DECODER = msgspec.json.Decoder(JobsAnswer)
_JOB_LIST_DECODER = msgspec.json.Decoder(list[RawJob])


class JobStateEntry(msgspec.Struct, gc=False):
    """One entry of ``GET /jobs/state`` (v0.0.41+): ``job_id`` is a string, ``"6383"``,
    ``"6383_1"`` for an array task (its own id, then its index) or ``"6382_3"`` for each
    index of an array's pending remainder (the array's id); ``state`` is a job_state list."""

    job_id: str | int
    state: str | list[str] | None = None


class JobStatesAnswer(_Fields):
    jobs: list[JobStateEntry] = []
    warnings: Any = msgspec.UNSET
    errors: Any = msgspec.UNSET


_STATES_DECODER = msgspec.json.Decoder(JobStatesAnswer)
_LEADING_ID = re.compile(r"\d+")


class Dialect:
    """v0.0.38 (Slurm 22.05, 23.02, 23.11): the oldest wire format.

    Later families subclass this and override only what changed.
    """

    def __init__(self, version: str) -> None:
        self.version = version

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.version!r})"

    # --- paths
    def path(self, endpoint: str) -> str:
        """``endpoint`` is one of ping, diag, jobs, job/submit, job/<id>."""
        return f"/slurm/{self.version}/{endpoint}"

    # --- submit
    def submit_body(self, sub: JobSubmission) -> dict[str, Any]:
        job = self._job_fields(sub)
        job.update(sub.extra)
        return {"script": sub.script, "job": job}

    def _job_fields(self, sub: JobSubmission) -> dict[str, Any]:
        job: dict[str, Any] = {
            "environment": self._environment(dict(sub.environment or DEFAULT_ENVIRONMENT))
        }
        for key, value in (
            ("name", sub.name),
            ("partition", sub.partition),
            ("current_working_directory", sub.working_directory),
            ("standard_output", sub.standard_output),
            ("standard_error", sub.standard_error),
            ("comment", sub.comment),
            ("array", sub.array),
            ("dependency", sub.dependency),
            ("tasks", sub.tasks),
            ("cpus_per_task", sub.cpus_per_task),
        ):
            if value is not None:
                job[key] = value
        if sub.time_limit is not None:
            job["time_limit"] = self._count(sub.time_limit)
        if sub.begin_time is not None:
            job["begin_time"] = self._time(sub.begin_time)
        if sub.memory_per_node is not None:
            job["memory_per_node"] = self._count(sub.memory_per_node)
        if sub.nodes is not None:
            job["nodes"] = self._nodes(sub.nodes)
        return job

    def _environment(self, env: dict[str, str]) -> Any:
        return env

    def _count(self, value: int) -> Any:
        return value

    def _time(self, value: int) -> Any:
        """An epoch time (``begin_time``): v0.0.38 parses a time string (a bare number
        is "Unable to parse time"; ``uts<epoch>`` is absolute, whatever the cluster's
        time zone), v0.0.39 takes the number, v0.0.40 on a no-val struct."""
        return f"uts{int(value)}"

    def _nodes(self, value: int) -> Any:
        return [value, value]

    def parse_submit(self, body: Mapping[str, Any]) -> SubmitResult:
        job_id = number(body.get("job_id"))
        if job_id is None:
            raise SlurmUnavailableError(
                "slurmrestd accepted the submission but returned no job_id: the job may exist",
                errors=body.get("errors") or (),
                maybe_submitted=True,
            )
        step = body.get("step_id")
        return SubmitResult(
            job_id=job_id,
            step_id=str(step) if step not in (None, "") else None,
            user_message=_text(body.get("job_submit_user_msg")),
            warnings=tuple(
                warning_texts(body.get("warnings") or ())
                + [str(e.get("error")) for e in body.get("errors") or ()]  # INFORMATIONAL only
            ),
        )

    # --- jobs
    def jobs_params(self, update_time: int | None) -> dict[str, str]:
        return {} if update_time is None else {"update_time": str(int(update_time))}

    # Whether ``GET /jobs/state`` is used (v0.0.41+, see Dialect40): ids and states only,
    # about 50 bytes a job where ``/jobs`` sends about 5,500.
    job_states = False

    def job_states_params(self, job_ids: Iterable[int] | None) -> list[tuple[str, str]]:
        """The query of ``GET /jobs/state`` for ``job_ids`` (all jobs when None): one
        ``job_id`` per id. (24.11 and 26.05 answer 422/9000 "Query empty or not RFC7320
        compliant" for a comma list, which requests encodes as %2C, and 400 or 500 for a
        bare comma, although the reference says "CSV list of JobIds".)"""
        return [("job_id", str(int(i))) for i in job_ids or ()]

    def decode_job_states(self, content: bytes) -> JobStatesAnswer:
        return _STATES_DECODER.decode(content)

    def parse_job_states(self, body: Mapping[str, Any] | JobStatesAnswer | None) -> dict[int, str]:
        """Job id → base state (as ``job_key`` reads it) of a ``GET /jobs/state`` answer;
        the entries of an array's pending remainder, one per index, are its one job."""
        states: dict[int, str] = {}
        for entry in (body or {}).get("jobs") or ():
            if not isinstance(entry, JobStateEntry):
                entry = msgspec.convert(entry, JobStateEntry)
            found = _LEADING_ID.match(str(entry.job_id))
            if found:
                states[int(found.group())] = self._state(entry.state)[0]
        return states

    def decode_jobs(self, content: bytes) -> JobsAnswer:
        """A ``GET /jobs`` answer decoded to the fields this dialect reads (see ``RawJob``);
        raises ``msgspec.DecodeError`` when it is not JSON of that shape."""
        return _JOBS_DECODER.decode(content)

    def decode_job_list(self, content: bytes | memoryview) -> list[RawJob]:
        """A JSON array of jobs as ``GET /jobs`` lists them (the client decodes a listing
        as it streams in, ``jobsplit``); raises ``msgspec.DecodeError`` when it is not."""
        return _JOB_LIST_DECODER.decode(content)

    def parse_jobs(self, status: int, body: Mapping[str, Any] | JobsAnswer | None) -> JobsPage:
        """22.05 answers 304 without a body when nothing changed since update_time."""
        if status == 304 or body is None:
            return JobsPage(jobs=(), changed=False, last_update=None)
        raws = body.get("jobs") or ()
        unchanged = not raws and any(
            _NO_CHANGE.search(w) for w in warning_texts(body.get("warnings") or ())
        )
        jobs = LazyJobs([raw_job(r) for r in raws], self.parse_job, self.job_key) if raws else ()
        return JobsPage(jobs=jobs, changed=not unchanged, last_update=self._last_update(body))

    def _last_update(self, body: Mapping[str, Any]) -> int | None:
        return number(body.get("last_update")) or None

    def job_key(self, raw: RawJob) -> JobKey:
        """The ``JobKey`` that ``parse_job(raw)`` would give, reading four fields."""
        return JobKey(raw.job_id, self._state(raw.job_state)[0], epoch(raw.submit_time), _text(raw.comment))

    def parse_job(self, raw: RawJob | Mapping[str, Any]) -> Job:
        raw = raw_job(raw)
        state, flags = self._state(raw.job_state)
        final = state in FINAL_STATES
        exit_code, signal = self._exit(raw.exit_code) if final else (None, None)
        array_job = number(raw.array_job_id) or None
        task = number(raw.array_task_id) if array_job else None  # an array task's index, not
        if task is not None and task >= 0xFFFFFFFE:  # NO_VAL (an array's pending remainder)
            task = None
        return Job(  # positional, in field order: keywords past 15 cost msgspec 5x the time
            raw.job_id,
            raw.name or "",
            state,
            flags,
            _text(raw.state_reason),
            exit_code,
            signal,
            timestamp(raw.submit_time),
            # Before a job ends Slurm reports projected times; they are not facts.
            timestamp(raw.start_time) if state != "PENDING" else None,
            timestamp(raw.end_time) if final else None,
            _text(raw.partition),
            _text(raw.user_name),
            _text(raw.comment),
            _text(raw.current_working_directory),  # working_directory
            _text(raw.stdout_expanded) or _expand_path(_text(raw.standard_output) or _default_output(raw), raw),
            array_job,
            task,
            _text(raw.dependency),
            number(raw.restart_cnt) or 0,  # restarts
            timestamp(raw.suspend_time),  # suspend_time
        )

    def _state(self, value: Any) -> tuple[str, tuple[str, ...]]:
        text = str(value or "UNKNOWN").upper()
        if text in _FLAG_ONLY_STATES:
            return _FLAG_ONLY_STATES[text], (text,)
        return text, ()

    def _exit(self, value: Any) -> tuple[int | None, int | None]:
        """v0.0.38 sends the raw wait status: exit 3 reads 768, SIGKILL reads 9."""
        return _wait_status(number(value))

    # --- cancel
    def check_cancel(self, body: Mapping[str, Any] | None, job_id: int) -> None:
        """Raise if a 2xx DELETE answer says the job was not signalled."""

    # --- ping
    def ping_status(self, ping: Mapping[str, Any]) -> str:
        """One controller's answer as ``UP`` or ``DOWN``; 22.05 says ``ping: UP``."""
        return str(ping.get("ping") or "UNKNOWN")

    def ping_down(self, body: Mapping[str, Any]) -> list[str]:
        """Controllers that did not answer (or refused the token)."""
        return [
            p.get("hostname", "?") for p in body.get("pings") or () if self.ping_status(p) == "DOWN"
        ]

    # --- accounting (slurmdbd, /slurmdb/)
    # Whether this client reads this version's slurmdbd answers: not v0.0.38/v0.0.39
    # (string states, other field names), which no supported cluster pairs with slurmdbd.
    accounting = False

    def accounting_path(self, endpoint: str) -> str:
        """``endpoint`` is one of ping, jobs, job/<id>."""
        return f"/slurmdb/{self.version}/{endpoint}"

    def accounting_jobs_params(self, user: str | None, since: int, name: str | None = None) -> dict[str, str]:
        """The bounded ``GET /slurmdb/.../jobs`` query of a search: ``user``'s jobs (named
        ``name``) that were eligible, ran or ended after ``since`` (epoch seconds), without
        their steps. (slurmdbd filters by user, name, state, partition and time; not by
        comment. Its name filter is a comma-separated list, so a name with a comma is not
        used as one.)"""
        params = {"start_time": f"uts{int(since)}", "skip_steps": "true"}
        if user:
            params["users"] = user
        if name and "," not in name:
            params["job_name"] = name
        return params

    def parse_accounting_job(self, raw: Mapping[str, Any]) -> Job:
        """A slurmdbd job record as a ``Job``. Its shapes differ from slurmctld's: state is
        ``{current: [..], reason}``, times are plain integers under ``time``, the comment is
        ``{job, administrator, system}``, the output path is ``stdout``/``stdout_expanded``."""
        state = raw.get("state") or {}
        times = raw.get("time") or {}
        comment = raw.get("comment")
        array = raw.get("array") or {}
        return self.parse_job({  # converted to a RawJob, the shape slurmctld's jobs have
            "job_id": number(raw.get("job_id")),
            "name": raw.get("name"),
            "job_state": state.get("current"),
            "state_reason": state.get("reason"),
            "exit_code": raw.get("exit_code"),
            "submit_time": times.get("submission"),
            "start_time": times.get("start"),
            "end_time": times.get("end"),
            "partition": raw.get("partition"),
            "user_name": raw.get("user"),
            "comment": comment.get("job") if isinstance(comment, Mapping) else comment,
            "current_working_directory": raw.get("working_directory"),
            "stdout_expanded": raw.get("stdout_expanded"),
            "standard_output": raw.get("stdout"),
            "array_job_id": array.get("job_id"),
            "array_task_id": array.get("task_id"),
            "restart_cnt": raw.get("restart_cnt"),  # a requeued, then purged job stays one job
        })

    # --- errors
    def classify(
        self, status: int, errors: Sequence[Mapping[str, Any]]
    ) -> type[SlurmError] | None:
        """The error type this answer means, or None when it is a success."""
        codes = error_codes(errors)
        if status < 400 and (not errors or (codes and set(codes) <= INFORMATIONAL)):
            return None
        if status in (401, 511) or AUTH_ERROR in codes or self._auth_failure(status, codes):
            return SlurmAuthError
        if status == 502 and DBD_CONNECTION in codes:
            return SlurmAuthError  # slurmdbd: a bad token, or slurmdbd itself is down
        if NOT_FOUND in codes or status == 404:
            return SlurmNotFoundError
        if status == 429 or BUSY.intersection(codes):
            return SlurmBusyError
        if any(2000 <= c < 3000 or 9000 <= c < 10000 for c in codes):
            return SlurmRejectedError
        if status in _TRANSIENT_STATUS or status >= 500:
            return SlurmUnavailableError
        return SlurmRejectedError

    def _auth_failure(self, status: int, codes: Sequence[int]) -> bool:
        """22.05: 500 with only -1 (GET) or 5005 (POST) means the token was refused."""
        return status == 500 and bool(codes) and set(codes) <= {-1, 5005}

    def submit_maybe_made(self, status: int, errors: Sequence[Mapping[str, Any]]) -> bool:
        """May this failed answer to a submit (without ``job_id``) have come after
        slurmctld made the job? See the module docstring."""
        codes = error_codes(errors)
        if status in (401, 511) or AUTH_ERROR in codes or BUSY.intersection(codes):
            return False
        if any(2000 <= c < 3000 or 9000 <= c < 10000 for c in codes):
            return False
        return status >= 500 or status == 404 or status < 400


class Dialect39(Dialect):
    """v0.0.39 (Slurm 23.02–24.05; from SchedMD's 23.02 reference).

    ``script`` moves inside ``job``; ``environment`` is a list of ``K=V``; counts
    and ``exit_code`` are ``{set, infinite, number}`` structs (the number is still
    the raw wait status); ``nodes`` is a count range string; times stay plain epochs.
    """

    def submit_body(self, sub: JobSubmission) -> dict[str, Any]:
        job = self._job_fields(sub)
        job["script"] = sub.script
        job.update(sub.extra)
        return {"job": job}

    def _environment(self, env: dict[str, str]) -> Any:
        return [f"{k}={v}" for k, v in env.items()]

    def _count(self, value: int) -> Any:
        return _struct(value)

    def _time(self, value: int) -> Any:
        return int(value)

    def _nodes(self, value: int) -> Any:
        return str(value)

    def ping_status(self, ping: Mapping[str, Any]) -> str:
        """``pinged: UP``; 24.11 says ``pinged: DOWN`` or ``responding: false`` for a bad token."""
        if ping.get("responding") is False:
            return "DOWN"
        return str(ping.get("pinged") or "UNKNOWN")


class Dialect40(Dialect39):
    """v0.0.40, v0.0.41 (Slurm 23.11–25.05).

    ``job_state`` is a list (base state + flags); times are structs; ``exit_code``
    is ``{status, return_code, signal{id, name}}``; the submit answer repeats itself
    under ``result``; ``update_time`` must be written ``uts<epoch>`` (a bare epoch
    is a 422); "no change" is 200 with ``jobs: []`` and a warning; DELETE says
    nothing about unknown or finished jobs.
    """

    def parse_submit(self, body: Mapping[str, Any]) -> SubmitResult:
        return super().parse_submit({**(body.get("result") or {}), **body})

    def _time(self, value: int) -> Any:
        return _struct(value)

    def jobs_params(self, update_time: int | None) -> dict[str, str]:
        return {} if update_time is None else {"update_time": f"uts{int(update_time)}"}

    @property
    def job_states(self) -> bool:  # type: ignore[override]
        """From v0.0.41 (Slurm 24.05): v0.0.40 names every array task by the array's id
        (24.11: ``"6596_0"`` for task 0, which runs as job 6597; v0.0.41 says ``"6597_0"``),
        so its answer cannot say which job of an array moved."""
        return self.version != "v0.0.40"

    def _state(self, value: Any) -> tuple[str, tuple[str, ...]]:
        if type(value) is list and len(value) == 1 and value[0] in BASE_STATES:
            return value[0], ()  # most jobs: one base state, no flag
        items = [str(v).upper() for v in (value if isinstance(value, list) else [value]) if v]
        base = next((s for s in items if s in BASE_STATES), None)
        if base is None:
            return super()._state(items[0] if items else None)
        return base, tuple(s for s in items if s != base)

    def _exit(self, value: Any) -> tuple[int | None, int | None]:
        if not isinstance(value, ExitCode):
            return None, None
        signal = number(value.signal.id) if value.signal else None
        return number(value.return_code), signal or None

    def _auth_failure(self, status: int, codes: Sequence[int]) -> bool:
        """24.11 says 511 + 1007; a 500 with -1 is not a token problem here."""
        return False

    # slurmdbd records as 26.05 serves them for v0.0.42–v0.0.45; SchedMD's reference gives
    # v0.0.40/v0.0.41 the same state, time and exit_code shapes.
    accounting = True


class Dialect42(Dialect40):
    """v0.0.42, v0.0.43, v0.0.44 (Slurm 24.11–26.05).

    No ``result`` in the submit answer; ``update_time`` is a bare epoch again;
    DELETE answers ``status[]`` with one entry per job Slurm could not signal;
    ping adds ``responding: false``.

    Differences within the family that need no code here:

    * v0.0.43: ``standard_output`` is the raw pattern (``…-%j.out``) and the path is the
      new ``stdout_expanded`` (v0.0.42 sends the expanded path as ``standard_output``);
      ``parse_job`` prefers ``stdout_expanded`` in every version.
    * v0.0.44: each job gains a ``step_id`` object (``{sluid, job_id, step_het_component,
      step_id: "entire"}``) and ``submit_line``; the submit answer's ``step_id`` stays the
      string ``"batch"``. ``job_state`` may carry the new flag ``EXPEDITING``.
    """

    def jobs_params(self, update_time: int | None) -> dict[str, str]:
        return Dialect.jobs_params(self, update_time)

    def check_cancel(self, body: Mapping[str, Any] | None, job_id: int) -> None:
        failures = [s for s in (body or {}).get("status") or () if s.get("error")]
        errors = [
            {"error_number": f["error"].get("code"), "error": f["error"].get("string"),
             "description": f["error"].get("message")}
            for f in failures
        ]
        codes = set(error_codes(errors))
        if not codes or codes == {ALREADY_DONE}:
            return
        kind = SlurmNotFoundError if codes == {NOT_FOUND} else SlurmRejectedError
        raise kind(f"Slurm could not cancel job {job_id}", status=200, errors=errors)


class Dialect45(Dialect42):
    """v0.0.45 (Slurm 26.05): ping has ``status`` ("No error", "Protocol authentication
    error") instead of ``pinged`` and no ``mode``; ``responding`` still says who answered."""

    def ping_status(self, ping: Mapping[str, Any]) -> str:
        return "UP" if ping.get("responding") is True else "DOWN"


def _wait_status(status: int | None) -> tuple[int | None, int | None]:
    """Split a POSIX wait status (``>>8`` exit status, ``&0x7f`` signal)."""
    if status is None:
        return None, None
    signal = status & 0x7F
    if signal:
        return None, signal
    return (status >> 8) & 0xFF, None


def warning_texts(warnings: Iterable[Any]) -> list[str]:
    out = []
    for w in warnings:
        if isinstance(w, Mapping):
            out.append(str(w.get("description") or w.get("warning") or w))
        else:
            out.append(str(w))
    return out


DIALECTS: dict[str, Dialect] = {
    "v0.0.38": Dialect("v0.0.38"),
    "v0.0.39": Dialect39("v0.0.39"),
    "v0.0.40": Dialect40("v0.0.40"),
    "v0.0.41": Dialect40("v0.0.41"),
    "v0.0.42": Dialect42("v0.0.42"),
    "v0.0.43": Dialect42("v0.0.43"),
    "v0.0.44": Dialect42("v0.0.44"),
    "v0.0.45": Dialect45("v0.0.45"),
}

# Classifies answers before the version is known (GET /openapi/v3): the v0.0.38 rules
# recognise every version's auth failure (401, 511, 1007, and 22.05's 500 forms).
BEFORE_NEGOTIATION = DIALECTS["v0.0.38"]


def version_key(version: str) -> tuple[int, ...]:
    """``"v0.0.42"`` → ``(0, 0, 42)`` for ordering."""
    return tuple(int(p) for p in version.lstrip("v").split("."))


def newest(served: Iterable[str]) -> str | None:
    """The newest version both the server and this client speak."""
    known = [v for v in served if v in DIALECTS]
    return max(known, key=version_key) if known else None


_SERVED = re.compile(r"^/(slurm|slurmdb)/(v\d+\.\d+\.\d+)/")


def served_versions(openapi: Mapping[str, Any], api: str = "slurm") -> list[str]:
    """The versions listed in a ``GET /openapi/v3`` document under ``/slurm/`` (slurmctld)
    or, with ``api="slurmdb"``, under ``/slurmdb/`` (slurmdbd: the cluster has accounting)."""
    found = {
        m.group(2) for p in (openapi.get("paths") or {})
        if (m := _SERVED.match(p)) and m.group(1) == api
    }
    return sorted(found, key=version_key)
