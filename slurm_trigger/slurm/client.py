"""``SlurmClient``: one slurmrestd, any version from v0.0.38 to v0.0.45.

The client negotiates the version lazily (once, on first use), sends requests through
the transport's session, and turns every answer that is not a success into a typed
``SlurmError``. What each version's wire looks like is ``dialects.py``'s business.
"""
from __future__ import annotations

import re
import ssl
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

import msgspec
import requests
from urllib3.exceptions import ConnectTimeoutError, ProxyError

from slurm_trigger.observability import logger
from slurm_trigger.settings import Settings
from slurm_trigger.slurm.auth import REDACTED, StaticToken, Token, TokenProvider
from slurm_trigger.slurm.dialects import (
    ALREADY_DONE,
    BEFORE_NEGOTIATION,
    DIALECTS,
    Dialect,
    JobsAnswer,
    RawJob,
    error_codes,
    newest,
    number,
    raw_job,
    served_versions,
    version_key,
)
from slurm_trigger.slurm.errors import (
    SlurmAuthError,
    SlurmError,
    SlurmNotFoundError,
    SlurmNotServedError,
    SlurmRejectedError,
    SlurmTLSError,
    SlurmUnavailableError,
    SlurmVersionError,
)
from slurm_trigger.slurm.jobsplit import split_jobs
from slurm_trigger.slurm.models import Job, JobsPage, JobSubmission, LazyJobs, SubmitResult
from slurm_trigger.slurm.transport import verify_failed

if TYPE_CHECKING:
    from slurm_trigger.slurm.pcs import PcsCluster

# How the token travels: slurmrestd's own headers, or a standard bearer token (Slurm
# 24.11 and 26.05 tried, 22.05 refuses it; the only form AWS PCS takes, no user-name header).
AUTH_HEADERS = ("x-slurm", "bearer")
# The shortest HS256 JWS: a 20-character header, a payload, a 43-character signature.
MIN_JWT_LENGTH = 16

# How far back ``find_jobs_by_comment`` searches accounting: a takeover happens when a
# retry of the same object comes back (minutes to hours; an SQS redrive within days).
ACCOUNTING_SEARCH_SECONDS = 7 * 24 * 3600
# How far slurmctld's clock may be behind the caller's when ``since`` bounds a search
# (both NTP-synced on EC2; generous, it only adds a few jobs to look at).
CLOCK_SKEW_SECONDS = 60


def details_budget(jobs: int) -> int:
    """How many of ``jobs`` (what slurmctld holds) are worth fetching one by one
    (``GET /job/{id}``, ~8.5 KB and one slurmctld RPC each) rather than listing all of
    ``/jobs`` (~5.5 KB a job, one RPC that packs every job): 1%, at least 20, at most
    1,000 (a few seconds of calls)."""
    return max(20, min(1000, jobs // 100))


class SlurmClient:
    """Calls to one slurmrestd with one identity.

    Submitting is never retried blindly: a POST whose body may have reached slurmrestd
    could already have made a job, and sending it again could make a second one. Every
    failed submit says whether it may have (``SlurmError.maybe_submitted``): transport
    failures after the body may have left (read timeout, connection reset, TLS error
    after the handshake), and answers the dialect cannot rule out (``Dialect.submit_maybe_made``:
    5xx, 22.05's 5005, 404, a 2xx without job id). The caller (the trigger) holds an
    idempotency claim for the object and stamps the same key into the job's comment
    (``provenance.encode``), so a later attempt first calls ``find_jobs_by_comment(key)``
    and adopts a job it finds instead of submitting again. Failures before anything was
    sent (connection refused, connect timeout) are retried by the transport, as are GET
    and DELETE.

    An auth failure (any version's form, see ``dialects``) makes the client fetch the
    token again once and repeat the call once; a second refusal raises ``SlurmAuthError``.
    A submit is not repeated when its answer may also mean a job (22.05's 5005): the
    fresh token waits for the next attempt.
    """

    def __init__(
        self,
        base_url: str,
        auth: TokenProvider,
        *,
        user: str,
        session: requests.Session | None = None,
        api_version: str | None = None,
        auth_header: str = "x-slurm",
    ) -> None:
        if auth_header not in AUTH_HEADERS:
            raise ValueError(f"auth header {auth_header!r}: use one of {', '.join(AUTH_HEADERS)}")
        if api_version is not None and api_version not in DIALECTS:
            raise SlurmVersionError(
                f"API version {api_version!r} is not one this client speaks "
                f"({', '.join(DIALECTS)})"
            )
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.auth_header = auth_header
        self._auth = auth
        if session is None:
            from slurm_trigger.slurm.transport import build_session

            session = build_session(Settings())
        self._session = session
        self._pinned = api_version
        self._dialect: Dialect | None = DIALECTS[api_version] if api_version else None
        self._served: list[str] | None = None
        self._served_db: list[str] = []

    def __repr__(self) -> str:
        version = self._dialect.version if self._dialect else "not negotiated"
        return f"SlurmClient({self.base_url!r}, user={self.user!r}, version={version})"

    # --- version negotiation
    @property
    def version(self) -> str:
        """The API version in use: pinned, or the newest both sides know."""
        return self.dialect.version

    @property
    def dialect(self) -> Dialect:
        if self._dialect is None:
            served = self.served_versions()
            chosen = newest(served)
            if chosen is None:
                raise SlurmVersionError(
                    f"{self.base_url} serves {', '.join(served) or 'no Slurm REST version'}; "
                    f"this client speaks {', '.join(DIALECTS)}",
                    url=self.base_url,
                )
            logger.debug("slurmrestd version chosen", extra={"url": self.base_url, "version": chosen, "served": served})
            self._dialect = DIALECTS[chosen]
        return self._dialect

    def served_versions(self) -> list[str]:
        """What the server serves, from ``GET /openapi/v3`` (needs auth on 22.05);
        when that document is missing, probe each known version's ping."""
        if self._served is None:
            try:
                _, body = self._call("GET", "/openapi/v3")
                self._served = served_versions(body or {})
                self._served_db = served_versions(body or {}, "slurmdb")
            except SlurmNotFoundError:
                self._served = self._probe(lambda d: d.path("ping"), DIALECTS)
                self._served_db = self._probe(lambda d: d.accounting_path("ping"), self._served)
        return self._served

    def _probe(self, path: Callable[[Dialect], str], versions: Iterable[str]) -> list[str]:
        found = []
        for version in sorted(versions, key=version_key, reverse=True):
            try:
                self._call("GET", path(DIALECTS[version]))
            except (SlurmNotFoundError, SlurmRejectedError):
                continue
            found.append(version)
        return sorted(found, key=version_key)

    @property
    def accounting(self) -> bool:
        """Whether the cluster has accounting this client reads: the server serves slurmdbd's
        ``/slurmdb/`` API for the version in use (slurmrestd with ``openapi/slurmdbd``)."""
        dialect = self.dialect
        self.served_versions()  # reads /slurmdb/ from the same document, once
        return dialect.accounting and dialect.version in self._served_db

    # --- calls
    def ping(self) -> dict[str, Any]:
        """The controllers' ping; ``SlurmAuthError`` when slurmctld refuses the token
        (24.11 answers 200 with ``pinged: DOWN`` then)."""
        path = self.dialect.path("ping")
        _, body = self._call("GET", path)
        if self.dialect.ping_down(body or {}):
            before = self._auth.token()
            if self._auth.refresh() != before:
                _, body = self._call("GET", path)
        down = self.dialect.ping_down(body or {})
        if down:
            raise SlurmAuthError(
                f"slurmctld on {', '.join(down)} did not answer the ping for user "
                f"{self._user()!r}: the token is invalid or expired, or slurmctld is down",
                status=200,
                url=self.base_url + path,
            )
        return dict(body or {})

    def diag(self) -> dict[str, Any]:
        _, body = self._call("GET", self.dialect.path("diag"))
        return dict(body or {})

    def submit_body(self, sub: JobSubmission) -> dict[str, Any]:
        """The exact JSON that ``submit`` would POST."""
        return self.dialect.submit_body(sub)

    def submit(self, sub: JobSubmission) -> SubmitResult:
        """Submit once; see the class docstring for what happens on ambiguous failures."""
        _, body = self._call("POST", self.dialect.path("job/submit"), json=self.submit_body(sub))
        return self.dialect.parse_submit(body or {})

    def list_jobs(self, update_time: int | None = None) -> JobsPage:
        """All jobs slurmctld still holds, or ``changed=False`` when none changed
        since ``update_time`` (epoch seconds). The answer is decoded job by job as it
        streams in (``read_answer``): 100,000 jobs are 547 MB of JSON."""
        dialect = self.dialect
        status, body = self._call(
            "GET", dialect.path("jobs"), params=dialect.jobs_params(update_time),
            decoder=dialect.decode_jobs, job_decoder=dialect.decode_job_list,
        )
        return dialect.parse_jobs(status, body)

    @property
    def serves_job_states(self) -> bool:
        """Whether ``job_states`` can be asked (v0.0.41+: Slurm 24.05 and later; v0.0.40's
        answer names array tasks by their array's id, see ``dialects``)."""
        return self.dialect.job_states

    def job_states(self, job_ids: Iterable[int] | None = None) -> dict[int, str]:
        """Job id → base state of every job slurmctld holds (of ``job_ids`` only, if
        given; ids it does not know are absent), from ``GET /jobs/state``: ~1% of the
        bytes of ``/jobs``. ``SlurmVersionError`` on v0.0.38–v0.0.40 (see ``serves_job_states``)."""
        dialect = self.dialect
        if not dialect.job_states:
            raise SlurmVersionError(f"{dialect.version} has no usable /jobs/state (v0.0.41 and later do)", url=self.base_url)
        if job_ids is not None:
            job_ids = list(job_ids)
            if not job_ids:
                return {}  # no job_id at all would ask for every job
        _, body = self._call(
            "GET", dialect.path("jobs/state"), params=dialect.job_states_params(job_ids),
            decoder=dialect.decode_job_states,
        )
        return dialect.parse_job_states(body)

    def get_jobs(self, job_ids: Iterable[int]) -> JobsPage:
        """The jobs of ``job_ids`` slurmctld still holds (the others are absent), by id,
        as a listing gives them: one ``GET /job/{id}`` each (every version takes one id
        in the path: 24.11 answers 400 and 26.05 404 for ``/job/1,2``)."""
        dialect = self.dialect
        raws: list[RawJob] = []
        for job_id in sorted(set(int(i) for i in job_ids)):
            try:
                _, body = self._call("GET", dialect.path(f"job/{job_id}"), decoder=dialect.decode_jobs)
            except SlurmNotFoundError:
                continue
            # an array's id answers with its tasks too: they are listed under their own ids
            raws += [r for r in map(raw_job, (body or {}).get("jobs") or ()) if r.job_id == job_id]
        return JobsPage(jobs=LazyJobs(raws, dialect.parse_job, dialect.job_key), last_update=None)

    def get_job(self, job_id: int) -> Job:
        """One job; ``SlurmNotFoundError`` if Slurm does not know it (any more)."""
        path = self.dialect.path(f"job/{int(job_id)}")
        _, body = self._call("GET", path)
        raws = [j for j in (body or {}).get("jobs") or () if j.get("job_id") == int(job_id)]
        if not raws:
            raise SlurmNotFoundError(
                f"Slurm does not know job {job_id}", status=200, url=self.base_url + path
            )
        return self.dialect.parse_job(raws[0])

    def cancel_job(self, job_id: int) -> None:
        """Cancel (SIGKILL) a job. Cancelling a job that already ended is a no-op;
        an unknown job raises ``SlurmNotFoundError`` where the version says so
        (v0.0.40/v0.0.41 answer 200 for unknown jobs)."""
        path = self.dialect.path(f"job/{int(job_id)}")
        try:
            _, body = self._call("DELETE", path)
            self.dialect.check_cancel(body, int(job_id))
        except SlurmRejectedError as exc:
            if set(error_codes(exc.errors)) != {ALREADY_DONE}:
                raise

    def find_jobs_by_comment(
        self, substring: str, *, name: str | None = None, since: float | None = None
    ) -> list[Job]:
        """Jobs whose comment contains ``substring`` (an idempotency key), by job id: how
        the trigger finds the job of a submit whose answer it never got. With accounting
        it also finds jobs that already left slurmctld (after MinJobAge), among this user's
        jobs of the last ``ACCOUNTING_SEARCH_SECONDS``; slurmctld's view of a job wins.
        ``name``, the job's name when the caller knows it, narrows the accounting query
        to jobs of that name (slurmdbd cannot filter by comment; a busy user's week of
        jobs is too much to download on every takeover). ``since`` (epoch seconds), when
        the caller knows the job cannot have been submitted before it, lets slurmctld be
        asked for the newest jobs only (``_newest_jobs``, v0.0.41+) instead of all of ``/jobs``."""
        newest = self._newest_jobs(since) if since is not None and self.dialect.job_states else None
        listed = newest if newest is not None else self.list_jobs().jobs
        found = {j.job_id: j for j in listed if j.comment and substring in j.comment}
        if self.accounting:
            since = int(time.time()) - ACCOUNTING_SEARCH_SECONDS
            for job in self.list_accounting_jobs(since, name=name):
                if job.comment and substring in job.comment:
                    found.setdefault(job.job_id, job)
        return [found[i] for i in sorted(found)]

    def _newest_jobs(self, since: float) -> list[Job] | None:
        """Every job slurmctld holds that may have been submitted at or after ``since``,
        or None when more than ``details_budget`` of them would have to be fetched to
        know (the caller lists all of ``/jobs`` then).

        Slurm numbers jobs in the order it creates them, and a job's ``submit_time`` is
        never before its creation (a requeue only moves it later), so walking the ids of
        ``/jobs/state`` downwards, the first job submitted before ``since`` (less the clock
        skew) ends the walk: every lower id was created before it. An array task split off
        later gets a new id but keeps the array's submit time, so it never ends the walk.
        When ids wrapped around (``MaxJobId``), the lowest ids are newer jobs than the
        highest: ``_wrapped`` checks, and the full listing is used then."""
        before = since - CLOCK_SKEW_SECONDS
        ids = sorted(self.job_states(), reverse=True)
        newest: list[Job] = []
        for job_id in ids[: details_budget(len(ids))]:
            for job in self.get_jobs([job_id]).jobs:  # none when it left meanwhile
                if _created_before(job, before):
                    return None if self._wrapped(ids, job) else newest
                newest.append(job)
        return newest if len(ids) <= details_budget(len(ids)) else None

    def _wrapped(self, ids: list[int], boundary: Job) -> bool:
        """Whether the lowest ids (``ids`` is sorted downwards) may be newer jobs than
        ``boundary``, which the walk from the highest id reached: the first of the three
        lowest that shows its creation time (not requeued, not a split array task) says.
        A wrap-around (MaxJobId) puts new jobs below old ones; unsure counts as wrapped."""
        for job_id in reversed(ids[-3:]):
            if job_id == boundary.job_id:
                return False
            for job in self.get_jobs([job_id]).jobs:
                if _shows_creation(job):
                    return boundary.submit_time is None or job.submit_time > boundary.submit_time
        return True

    # --- accounting (slurmdbd)
    def get_accounting_job(self, job_id: int) -> Job | None:
        """slurmdbd's record of a job: its final state, exit code and times, also long
        after it left slurmctld. None when the cluster has no accounting or accounting does
        not know the job (slurmdbd learns of a job's end about a second after it).
        ``SlurmUnavailableError``/``SlurmAuthError`` when slurmdbd cannot be asked."""
        if not self.accounting:
            return None
        path = self.dialect.accounting_path(f"job/{int(job_id)}")
        try:
            _, body = self._call("GET", path)
        except SlurmNotFoundError:
            return None
        raws = [j for j in (body or {}).get("jobs") or () if number(j.get("job_id")) == int(job_id)]
        return self.dialect.parse_accounting_job(raws[-1]) if raws else None

    def list_accounting_jobs(self, since: int, *, name: str | None = None) -> list[Job]:
        """This user's jobs in accounting (named ``name``, if given) that were eligible, ran
        or ended after ``since`` (epoch seconds); [] without accounting."""
        if not self.accounting:
            return []
        dialect = self.dialect
        _, body = self._call(
            "GET", dialect.accounting_path("jobs"),
            params=dialect.accounting_jobs_params(self._user(), since, name),
        )
        return [dialect.parse_accounting_job(j) for j in (body or {}).get("jobs") or ()]

    # --- plumbing
    def _user(self) -> str:
        return self._auth.user() or self.user

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        decoder: Callable[[bytes], Any] | None = None,
        job_decoder: Callable[[memoryview], list[RawJob]] | None = None,
    ) -> tuple[int, Any]:
        """One request (two if the token had to be fetched again): (status, JSON body).
        ``decoder`` decodes the body to the fields the caller reads (falling back to
        ``decode`` when the body does not have that shape); ``job_decoder``, for a listing
        of jobs, decodes each job as it arrives (``read_answer``)."""
        token = self._auth.token()
        status, body, text = self._send(method, path, token, params, json, decoder, job_decoder)
        kind, maybe = self._verdict(method, status, body)
        if kind is SlurmAuthError:
            fresh = self._auth.refresh()
            if fresh != token and not maybe:  # never POST again when the first may have made a job
                logger.info("slurmrestd refused the token; fetched it again and retrying once",
                            extra={"url": self.base_url})
                status, body, text = self._send(method, path, fresh, params, json, decoder, job_decoder)
                kind, maybe = self._verdict(method, status, body)
        if kind is None:
            return status, body
        if maybe and not kind.transient:
            kind = SlurmUnavailableError  # unknown, not refused: retried, and the retry asks Slurm
        errors = list((body or {}).get("errors") or ()) or ([{"error": text}] if text else [])
        message = _message(kind, method, path, status, self._user(), text)
        if kind is SlurmNotFoundError and "find requested URL" in f"{text} {errors}":
            kind = SlurmNotServedError  # not a job Slurm forgot: the path itself is unknown
            message = f"{self.base_url} does not serve {method} {path}" + (
                f": REST version {self._pinned} is pinned (--api-version, SLURM_API_VERSION); "
                "`slurm-trigger versions` shows what it serves" if self._pinned else "")
        raise kind(
            message + ("; the job may exist: Slurm must be asked before submitting again" if maybe else ""),
            status=status,
            errors=errors,
            warnings=(body or {}).get("warnings") or (),
            url=self.base_url + path,
            job_id=number((body or {}).get("job_id")) or None,
            maybe_submitted=maybe,
        )

    def _verdict(self, method: str, status: int, body: dict[str, Any] | None) -> tuple[type[SlurmError] | None, bool]:
        """The error type of an answer (None: success) and, for a failed POST (a
        submit) without a job id, whether Slurm may have made the job anyway."""
        errors = list((body or {}).get("errors") or ())
        dialect = self._dialect or BEFORE_NEGOTIATION
        kind = dialect.classify(status, errors)
        made = number((body or {}).get("job_id")) is not None
        maybe = kind is not None and method == "POST" and not made and dialect.submit_maybe_made(status, errors)
        return kind, maybe

    def _send(
        self,
        method: str,
        path: str,
        token: Token,
        params: Mapping[str, str] | None,
        json: Any,
        decoder: Callable[[bytes], Any] | None = None,
        job_decoder: Callable[[memoryview], list[RawJob]] | None = None,
    ) -> tuple[int, Any, str]:
        """(status, JSON body or None, text of a non-JSON body)."""
        url = self.base_url + path
        if self.auth_header == "bearer":  # the user is the token's own (sun); PCS allows no other
            headers = {"Authorization": f"Bearer {token.reveal()}"}
        else:
            headers = {"X-SLURM-USER-NAME": self._user(), "X-SLURM-USER-TOKEN": token.reveal()}
        failure = None
        try:
            # No redirects: requests would carry the X-SLURM-* headers to wherever a
            # Location points (it drops only Authorization on a change of host).
            resp = self._session.request(
                method, url, params=params, json=json, headers=headers, allow_redirects=False, stream=True
            )
            body, content = (None, b"") if resp.is_redirect else read_answer(resp, token, decoder, job_decoder)
        except requests.RequestException as exc:  # the body's read fails the same ways
            failure = _unavailable(method, url, exc, token)
        if failure is not None:  # raised outside the except: no __context__ holds the request
            raise failure
        if resp.is_redirect:
            resp.close()  # unread: the connection is not reused
            raise SlurmUnavailableError(
                f"{method} {url} answered {resp.status_code}, a redirect, which is not followed "
                "(it would take the token along): set SLURM_URL to where slurmrestd answers",
                status=resp.status_code, url=url,
            )
        text = content.decode(resp.encoding or "utf-8", "replace").strip()[:300] if body is None else ""
        return resp.status_code, body, text


def read_answer(
    resp: requests.Response,
    token: Token,
    decoder: Callable[[bytes], Any] | None = None,
    job_decoder: Callable[[memoryview], list[RawJob]] | None = None,
) -> tuple[Any, bytes | bytearray]:
    """(JSON body or None, the bytes it was decoded from) of a ``stream=True`` response,
    the token redacted (a proxy or debug page may echo the headers). With ``job_decoder``
    a 200 answer is split into its jobs as it arrives (``jobsplit``: each job decoded,
    its bytes dropped; 547 MB at 100,000 jobs) and the rest (the envelope, or whatever
    could not be split) decoded like any answer, the jobs put back in front of its own."""
    jobs: list[RawJob] = []
    if job_decoder is not None and resp.status_code == 200:
        secret = token.reveal().encode()
        jobs, content = split_jobs(_chunks(resp), job_decoder, secret if len(secret) >= MIN_JWT_LENGTH else b"")
    else:
        content = read_body(resp)
    content = redact(content, token)
    body = decode(content, decoder)
    if jobs and isinstance(body, JobsAnswer):
        body.jobs = jobs + body.jobs
    elif jobs and isinstance(body, dict) and isinstance(body.get("jobs"), list):
        body["jobs"] = jobs + body["jobs"]  # the rest has another shape: parse_jobs says how
    return body, content  # a rest that does not decode (a cut body) is None, as a whole one


def read_body(resp: requests.Response) -> bytearray:
    """The whole body of a ``stream=True`` response, in one buffer that grows as it
    is read. ``Response.content`` joins a list of 10 KB chunks, so for a moment it
    holds the body twice; msgspec decodes this buffer as it is."""
    body = bytearray()
    for chunk in _chunks(resp):
        body += chunk
    return body


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. Read to the end, the connection goes back to the pool;
    a read that fails closes it."""
    try:
        yield from resp.iter_content(_READ_CHUNK)
    except BaseException:
        resp.close()
        raise


_READ_CHUNK = 1 << 20


def _shows_creation(job: Job) -> bool:
    """The job's submit time is when Slurm made it (and numbered it): no requeue moved
    it, and it is not an array task split off (under a new id) after the array's submit."""
    return job.submit_time is not None and job.restarts == 0 and job.array_job_id in (None, job.job_id)


def _created_before(job: Job, moment: float) -> bool:
    """The job was certainly made before ``moment`` (epoch seconds)."""
    return _shows_creation(job) and job.submit_time is not None and job.submit_time.timestamp() < moment


def decode(content: bytes | bytearray, decoder: Callable[[bytes], Any] | None = None) -> Any:
    """A slurmrestd answer decoded by ``decoder`` (a dialect's, which keeps only the
    fields it reads), else as a plain JSON object; None when empty or not an object.

    msgspec, not ``json``: a ``GET /jobs`` over 10,000 jobs is ~55 MB of JSON and
    decoding it was most of a tracker poll. msgspec reads the UTF-8 bytes without a
    ``str`` copy: 0.27 s and +208 MB peak RSS where ``json`` takes 0.47 s and +243 MB
    (orjson: 0.33 s but +356 MB, its parser's buffer is ~15x the input)."""
    if not content:
        return None
    if decoder is not None:
        try:
            return decoder(content)
        except msgspec.DecodeError:
            pass  # not the expected shape (an error page): decode it plainly
    try:
        data = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    return data if isinstance(data, dict) else None


def _message(
    kind: type[SlurmError], method: str, path: str, status: int, user: str, text: str
) -> str:
    call = f"{method} {path}"
    if kind is SlurmAuthError and path.startswith("/slurmdb/"):
        return (
            f"slurmrestd could not open a slurmdbd connection for user {user!r} on {call}: "
            "the token is refused (check it, its user and its expiry) or slurmdbd is down"
        )
    if kind is SlurmAuthError:
        return (
            f"slurmrestd refused the token for user {user!r} on {call} (a secret's token is read "
            "again, a minted one minted again, once first): check the token, its user and its expiry"
        )
    if kind is SlurmNotFoundError:
        return f"Slurm does not know the job of {call} (ended jobs leave after MinJobAge)"
    if kind is SlurmUnavailableError:
        return f"slurmrestd could not serve {call}; try again later"
    return f"Slurm rejected {call}" + (f": {text}" if text else "")


def _unavailable(
    method: str, url: str, exc: requests.RequestException, token: Token
) -> SlurmError:
    """A typed error without the request (whose headers hold the token)."""
    what = type(exc).__name__
    if isinstance(exc, requests.exceptions.InvalidHeader):
        # Its message quotes the header value. Tokens are checked when loaded, so this
        # is another header (the user name): say so, and quote nothing.
        return SlurmRejectedError(
            f"a request header has characters HTTP does not allow ({method} {url}: {what}); "
            "check the Slurm user name (SLURM_USER)", url=url
        )
    maybe = method == "POST" and _maybe_sent(exc)
    if isinstance(exc, requests.exceptions.SSLError) and verify_failed(exc):
        return SlurmTLSError(
            redact(f"TLS verification of the head node failed: its certificate is not the published "
                   f"one, has expired, or is not issued for this address; check SLURM_CA_PARAMETER, "
                   f"SLURM_CA_SECRET or SLURM_CA_BUNDLE ({method} {url}: {_reason(exc)})", token),
            url=url,
        )
    cause = _cause(exc)
    if maybe:
        hint = "the request may have been sent but no answer came: the job may exist"
    elif isinstance(exc, requests.exceptions.SSLError) and any(r in cause for r in _NOT_TLS):
        hint = "the server does not speak TLS: is slurmrestd plain http:// (loopback, PCS)?"
    elif isinstance(exc, requests.exceptions.SSLError):
        hint = "TLS verification failed; set ca_bundle, ca_secret or ca_parameter"
    else:
        hint = "could not reach slurmrestd"
    return SlurmUnavailableError(
        redact(f"{hint} ({method} {url}: {cause})", token), url=url, maybe_submitted=maybe
    )


# What OpenSSL says when the other side answers a ClientHello in plain HTTP.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")


def _cause(exc: requests.RequestException) -> str:
    """The innermost urllib3 error's own words ("Failed to establish a new connection:
    [Errno 111] Connection refused", "Read timed out. (read timeout=30)"), without the
    pool and retry wrappers around them; the exception type when there is none."""
    text, err = f"{type(exc).__name__}: {exc}", exc
    for _ in range(8):  # requests' error > MaxRetryError > NewConnectionError > OSError
        err = getattr(err, "reason", None) or (err.args[0] if getattr(err, "args", None) else None)
        if not isinstance(err, BaseException) or not type(err).__module__.startswith("urllib3"):
            break
        text = str(err)
    return re.sub(r"^HTTPS?Connection(Pool)?\([^)]*\): ", "", text)


_Text = TypeVar("_Text", str, bytes, bytearray)


def redact(data: _Text, token: Token) -> _Text:
    """``data`` with every occurrence of the token replaced. A value shorter than any
    signed JWT (a test's stand-in) is left alone: replacing it would mangle the text
    and hide nothing."""
    secret = token.reveal()
    if len(secret) < MIN_JWT_LENGTH:
        return data
    if isinstance(data, (bytes, bytearray)):
        found = secret.encode()
        # a bytearray's replace copies it even when nothing is found (547 MB for a big /jobs)
        return data.replace(found, REDACTED.encode()) if found in data else data
    return data.replace(secret, REDACTED)


def _reason(exc: BaseException) -> str:
    """The innermost SSL message ("... certificate verify failed: certificate has expired")."""
    err: Any = exc
    for _ in range(8):  # requests' SSLError > MaxRetryError > urllib3 SSLError > ssl error
        if isinstance(err, ssl.SSLError):
            return str(err)
        err = getattr(err, "reason", None) or (err.args[0] if getattr(err, "args", None) else None)
    return str(exc)


# Built by requests before anything is sent: a bad header (a token with CR/LF), a bad URL.
_NOT_SENT = (
    requests.ConnectTimeout,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidJSONError,
    requests.exceptions.URLRequired,
)
# OpenSSL reasons that only a TLS handshake gives: before the request is written.
_HANDSHAKE_REASONS = (
    "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "HANDSHAKE_FAILURE",
    "PROTOCOL_VERSION", "UNKNOWN_CA", "NO_PROTOCOLS_AVAILABLE", "TLSV1_UNRECOGNIZED_NAME",
)


def _maybe_sent(exc: requests.RequestException) -> bool:
    """May the request have reached slurmrestd? No only when it failed before any of it
    left: built wrong, the connect phase (refused, DNS, connect timeout) or the TLS
    handshake. Anything later (a read timeout, a reset or a TLS error after sending, a
    broken answer) may have."""
    if isinstance(exc, _NOT_SENT):
        return False
    if isinstance(exc, requests.exceptions.SSLError):
        return not _handshake_failure(exc)
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, ProxyError):
            reason = reason.original_error
        return not isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one
    return True


def _handshake_failure(exc: BaseException) -> bool:
    """The TLS failure is the handshake's: certificate verification, or an OpenSSL
    reason only a handshake gives (requests' message carries the wrapped ones)."""
    return verify_failed(exc) or any(r in str(exc) for r in _HANDSHAKE_REASONS)


def build_client(
    settings: Settings,
    *,
    secrets_client: Any = None,
    ec2_client: Any = None,
    ssm_client: Any = None,
    pcs_client: Any = None,
    session: requests.Session | None = None,
) -> SlurmClient:
    """A client for ``settings``; AWS clients are made only when something needs them
    (no EC2 when ``slurm_url`` is set, no Secrets Manager when ``token`` is given, PCS
    only for a PCS target)."""
    from slurm_trigger.slurm.transport import build_session, check_plain_http

    def secrets() -> Any:
        return secrets_client or _boto("secretsmanager")

    cluster = None
    if settings.pcs_cluster:
        from slurm_trigger.slurm.pcs import describe

        cluster = describe(pcs_client or _boto("pcs"), settings.pcs_cluster, use_public_ip=settings.use_public_ip)
    if settings.slurm_url:
        url = settings.slurm_url
    elif cluster is not None:
        url = cluster.rest_url
    else:
        from slurm_trigger.slurm.discovery import head_node_url

        url = head_node_url(
            ec2_client or _boto("ec2"),
            settings.cluster_name,
            use_public_ip=settings.use_public_ip,
            scheme=settings.slurm_scheme,
            port=settings.slurm_port,
        )
    # PCS serves slurmrestd over plain HTTP only: naming a PCS cluster is the explicit choice.
    check_plain_http(url, allowed=settings.allow_http or cluster is not None,
                     why=f"PCS cluster {cluster.name}" if cluster else "SLURM_ALLOW_HTTP=true",
                     cluster=settings.cluster_name)
    auth = token_provider(settings, secrets, cluster)
    if session is None:
        session = build_session(
            settings, secrets_client=secrets, ssm_client=lambda: ssm_client or _boto("ssm")
        )
    return SlurmClient(
        url, auth, user=settings.slurm_user, session=session, api_version=settings.api_version,
        auth_header="bearer" if cluster is not None else settings.auth_header,
    )


def token_provider(
    settings: Settings, secrets: Callable[[], Any], cluster: "PcsCluster | None" = None
) -> TokenProvider:
    """A token given directly, minted from a signing key (a PCS cluster's own, a key file,
    a key secret), or read from the token secret; ``secrets`` makes the Secrets Manager
    client when one is needed."""
    if settings.token:
        return StaticToken(settings.token)
    if not settings.mints_tokens and cluster is None:
        from slurm_trigger.slurm.auth import SecretsManagerToken

        return SecretsManagerToken(secrets(), settings.secret_id, settings.token_cache_seconds)
    from slurm_trigger.slurm.minting import Identity, MintedToken, SigningKey

    if settings.jwt_key_file:
        key = SigningKey.from_file(settings.jwt_key_file)
    elif cluster is not None:
        if settings.jwt_key_secret and not same_secret(settings.jwt_key_secret, cluster.jwt_key_secret):
            raise ValueError(
                f"SLURM_JWT_KEY_SECRET is {settings.jwt_key_secret!r} but PCS cluster {cluster.name!r} "
                f"signs with {cluster.jwt_key_secret!r}: set it to that ARN and re-render the policies"
            )
        key = SigningKey.from_secret(
            secrets(), cluster.jwt_key_secret, version_id=cluster.jwt_key_version,
            encoding=settings.jwt_key_encoding, max_age=settings.token_cache_seconds,
        )
    else:
        assert settings.jwt_key_secret
        key = SigningKey.from_secret(
            secrets(), settings.jwt_key_secret, encoding=settings.jwt_key_encoding,
            max_age=settings.token_cache_seconds,
        )
    identity = None
    if settings.slurm_uid is not None or settings.slurm_gid is not None:
        if settings.slurm_uid is None or settings.slurm_gid is None:
            raise ValueError("minted tokens need both SLURM_UID and SLURM_GID, or neither")
        identity = Identity(settings.slurm_uid, settings.slurm_gid)
    elif cluster is not None:
        raise ValueError(
            f"PCS cluster {cluster.name!r} takes the user's identity from the token: set SLURM_UID "
            f"and SLURM_GID to {settings.slurm_user!r}'s uid and gid on the cluster's nodes"
        )
    return MintedToken(key, settings.slurm_user, settings.jwt_lifetime, identity)


def same_secret(setting: str, arn: str) -> bool:
    """``setting`` (a secret's name or full ARN) names the secret of ``arn``."""
    if setting.startswith("arn:"):
        return setting == arn
    name = arn.split(":secret:", 1)[-1]
    return name == setting or name.rsplit("-", 1)[0] == setting


def _boto(service: str) -> Any:
    import boto3

    return boto3.client(service)
