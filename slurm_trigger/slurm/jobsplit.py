"""A ``GET /jobs`` answer split into its jobs while it streams in, so that a listing of
100,000 jobs (547 MB of JSON) never sits in memory whole: each job is decoded as soon as
its bytes have arrived and the bytes are dropped.

Hand-written because no well-kept library does this at the speed needed: msgspec (which
decodes the jobs) has no streaming decoder, and ijson builds Python objects for every
field of every job (far too slow for 500 MB). What is split here is only ever trusted
once msgspec has decoded it:

* The jobs array is found by its key, ``"jobs": [``, which the text before it must show
  to be at the top level (that text, closed with ``}``, decodes as an object).
* Its first job's opening, from ``{`` to the end of its first key (``{\\n      "account":``
  pretty-printed, ``{"account":`` compact), is the delimiter of every job. It can only
  occur structurally: inside a JSON string its quote would be escaped. It may open a
  nested object, though: a piece that ends there does not decode (its brackets are not
  closed), and the piece is extended to the next candidate.
* A piece is the bytes from one job's ``{`` to the comma before a delimiter, with only
  whitespace between; the last one ends before the array's ``]``. As the body arrives,
  every whole job up to the last delimiter read is one piece, decoded at once by the
  dialect's ``decode_job_list`` from a ``memoryview`` slice (no copy): the byte before
  it and its comma become ``[`` and ``]`` while msgspec reads it. Where that fails (a
  nested object's opening, a job of another shape), the jobs are taken one by one.
* The envelope (``warnings``, ``errors``, ``last_update``, ``meta`` …, before or after the
  array, depending on the version) is what is left: the body with the verified jobs cut
  out, ``"jobs": [ ]``, which the client decodes as it decodes any answer.

Anything else (no jobs array, an empty one, a piece that does not decode within
``MAX_TRIES`` candidates, the token echoed in the body, a cut body) stops the splitting:
the rest of the body is kept whole and ``Split.rest`` holds it after the envelope's head,
so the client decodes what is left exactly as it decodes any answer, and nothing is lost
(a second top-level ``jobs``, which the whole body's decode would take, drops the split).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, NamedTuple

import msgspec

# The top-level jobs array and its first job's opening up to its first key's colon (the
# delimiter): whitespace as any JSON writer puts it; a key with an escape is not matched.
_JOBS_START = re.compile(rb'"jobs"\s*:\s*\[\s*(\{\s*"[^"\\]*"\s*:)')
_JOBS_KEY = re.compile(rb'"jobs"\s*:')
# How much of the body may come before the jobs array (v0.0.38 puts ``meta`` and
# ``errors`` first: about 1 KB): past this, the body is kept whole.
HEAD_LIMIT = 1 << 20
# Candidate ends tried for one piece before the splitting stops: one more for each
# nested object that opens like a job (none in any recorded answer).
MAX_TRIES = 64
# The least read between two splits: a server's small HTTP chunks are not split one by one.
BATCH = 1 << 16


class Split(NamedTuple):
    jobs: list[Any]  # the jobs decoded, in order, cut out of ``rest``
    rest: bytes | bytearray  # the body without them: to decode as the whole answer


def split_jobs(
    chunks: Iterable[bytes], decode_jobs: Callable[[memoryview], list[Any]], secret: bytes = b""
) -> Split:
    """The jobs of the ``GET /jobs`` body that ``chunks`` stream, decoded with
    ``decode_jobs`` (a JSON array of jobs: all whole jobs that have arrived, at once), and
    the rest of the body. Splitting stops (the rest is kept whole from there) where it
    cannot be verified, or where ``secret`` (the token: the client redacts it from the
    whole rest) appears."""
    splitter = _Splitter(decode_jobs)
    chunks = iter(chunks)
    for chunk in chunks:
        grown = len(splitter.buf)
        splitter.buf += chunk
        if secret and splitter.buf.find(secret, max(0, grown - len(secret) + 1)) >= 0:
            return splitter.whole(chunks)
        splitter.fresh += len(chunk)
        if splitter.fresh >= BATCH and not splitter.split():
            return splitter.whole(chunks)
    if not splitter.split():
        return splitter.whole(chunks)
    split = splitter.last()
    head = splitter.head
    if split.jobs and _JOBS_KEY.search(split.rest, len(head)) and _jobs_again(split.rest, head):
        return Split([], split.rest)  # the last of two "jobs" keys wins, as in the whole body
    return split


class _Splitter:
    """The body read so far (``buf``, from the byte before the first job not decoded yet,
    ``start``), what was decoded (``jobs``) and where the search for a split stands."""

    def __init__(self, decode_jobs: Callable[[memoryview], list[Any]]) -> None:
        self.decode_jobs = decode_jobs
        self.jobs: list[Any] = []
        self.buf = bytearray()
        self.fresh = 0  # bytes read since the last split
        self.head = b""  # the body up to the first job, once found
        self.delimiter = b""
        self.start = 0
        self.search = 0  # where the next delimiter is looked for, one by one
        self.tries = 0  # candidates that failed for the job at ``start``

    def split(self) -> bool:
        """Decode the whole jobs the buffer holds; False when the body cannot be split."""
        self.fresh = 0
        buf = self.buf
        if not self.delimiter:
            found = _JOBS_START.search(buf)
            if found is None:
                return len(buf) <= HEAD_LIMIT
            if not _top_level(bytes(buf[: found.start()])):
                return False
            self.head, self.delimiter = bytes(buf[: found.start(1)]), bytes(found.group(1))
            self.start = self.search = found.start(1)
        with memoryview(buf) as view:
            # Fast: every job up to the last delimiter, at once (where a job opens; a
            # nested object's opening fails to decode, and the jobs are taken one by one).
            end = buf.rfind(self.delimiter, self.start + 1)
            if not self.tries and end > 0 and self._take(view, end):
                self.search = end
            elif not self._one_by_one(view):
                return False
        if self.start > 1:  # the bytes decoded are dropped (one kept before the next job)
            drop = self.start - 1
            del buf[:drop]
            self.start, self.search = 1, self.search - drop
        return True

    def _one_by_one(self, view: memoryview) -> bool:
        while (end := self.buf.find(self.delimiter, self.search + 1)) >= 0:
            if self._take(view, end):
                self.tries = 0
            else:
                self.tries += 1
                if self.tries > MAX_TRIES:
                    return False
            self.search = end
        self.search = max(self.search, len(self.buf) - len(self.delimiter))  # searched
        return True

    def _take(self, view: memoryview, end: int) -> bool:
        """Decode the jobs from ``start`` to the comma before ``end`` (a job's opening, with
        only whitespace between); True when they decode."""
        buf = self.buf
        comma = buf.rfind(b",", self.start, end)
        if comma <= self.start or buf[comma + 1:end].strip():
            return False
        jobs = _decoded(buf, view, self.start, comma, self.decode_jobs)
        if jobs is None:
            return False
        self.jobs += jobs
        self.start = end
        return True

    def last(self) -> Split:
        """The body's end: the last job, the array's ``]`` and the envelope's tail. The job
        ends at one of the last ``]`` (the tail has a few of its own): where it decodes."""
        buf = self.buf
        if not self.delimiter:
            return Split(self.jobs, buf)
        end = len(buf)
        with memoryview(buf) as view:
            for _ in range(MAX_TRIES):
                end = buf.rfind(b"]", self.start, end)
                if end <= self.start:
                    break
                jobs = _decoded(buf, view, self.start, end, self.decode_jobs)
                if jobs is not None:
                    self.jobs += jobs
                    return Split(self.jobs, self.head + buf[end:])
        return Split(self.jobs, self.head + buf[self.start:])

    def whole(self, chunks: Iterable[bytes]) -> Split:
        """Splitting stops: the rest of the body read into one buffer after what is left."""
        rest = bytearray(self.head)
        rest += memoryview(self.buf)[self.start:]
        self.buf = bytearray()
        for chunk in chunks:
            rest += chunk
        return Split(self.jobs, rest)


def _decoded(
    buf: bytearray, view: memoryview, start: int, stop: int, decode_jobs: Callable[[memoryview], list[Any]]
) -> list[Any] | None:
    """The jobs from ``start`` to ``stop`` (a comma or the array's end) decoded in place as
    an array: the byte before ``start`` (between jobs, or the array's ``[``) and the one at
    ``stop`` become ``[`` and ``]`` while msgspec reads them; None when they do not decode."""
    before, after = buf[start - 1], buf[stop]
    buf[start - 1], buf[stop] = 0x5B, 0x5D  # [ ]
    try:
        return decode_jobs(view[start - 1:stop + 1])
    except msgspec.DecodeError:  # ValidationError too: not whole jobs
        return None
    finally:
        buf[start - 1], buf[stop] = before, after


def _top_level(before: bytes) -> bool:
    """Whether the text before a ``"jobs"`` key is an object's opening and whole members
    other than ``jobs``: the key is the answer's own, not a nested object's."""
    text = before.strip()
    if text == b"{":
        return True
    if not text.startswith(b"{") or not text.endswith(b","):
        return False
    try:
        members = msgspec.json.decode(text[:-1] + b"}")
    except msgspec.DecodeError:
        return False
    return isinstance(members, dict) and "jobs" not in members


def _jobs_again(rest: bytes | bytearray, head: bytes) -> bool:
    """Whether the answer has another top-level ``jobs`` after the one split (no slurmrestd
    writes a key twice; a decoder keeps the last): ``rest`` decodes with one more ``jobs``
    where the split one is renamed."""
    key = head.rindex(b'"jobs"')
    try:
        probe = msgspec.json.decode(rest[:key] + b'"jobs:split"' + rest[key + len(b'"jobs"'):])
    except msgspec.DecodeError:
        return False  # the rest does not decode either
    return isinstance(probe, dict) and "jobs" in probe
