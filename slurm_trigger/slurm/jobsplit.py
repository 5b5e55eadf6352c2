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
* A piece is the bytes from one job's ``{`` to the comma before the next delimiter, with
  only whitespace between them; the last one ends before the array's ``]``. Each piece
  is decoded from a ``memoryview`` slice (no copy) by the dialect's ``decode_job``.
* The envelope (``warnings``, ``errors``, ``last_update``, ``meta`` …, before or after the
  array, depending on the version) is what is left: the body with the verified jobs cut
  out, ``"jobs": [ ]``, which the client decodes as it decodes any answer.

Anything else (no jobs array, an empty one, a piece that does not decode within
``MAX_TRIES`` candidates, the token echoed in the body, a cut body) stops the splitting:
the rest of the body is kept whole and ``Split.rest`` holds it after the envelope's head,
so the client decodes what is left exactly as it decodes any answer, and nothing is lost.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import msgspec

# The top-level jobs array and its first job's opening up to its first key's colon (the
# delimiter): whitespace as any JSON writer puts it; a key with an escape is not matched.
_JOBS_START = re.compile(rb'"jobs"\s*:\s*\[\s*(\{\s*"[^"\\]*"\s*:)')
# How much of the body may come before the jobs array (v0.0.38 puts ``meta`` and
# ``errors`` first: about 1 KB): past this, the body is kept whole.
HEAD_LIMIT = 1 << 20
# Candidate ends tried for one piece before the splitting stops: one more for each
# nested object that opens like a job (none in any recorded answer).
MAX_TRIES = 64
# The least that is split at a time: a server's small HTTP chunks are joined first, so
# that what is left of a job is not copied again for each of them.
BATCH = 1 << 16


class Split(NamedTuple):
    jobs: list[Any]  # the jobs decoded, in order, cut out of ``rest``
    rest: bytes | bytearray  # the body without them: to decode as the whole answer


def split_jobs(chunks: Iterable[bytes], decode_job: Callable[[memoryview], Any], secret: bytes = b"") -> Split:
    """The jobs of the ``GET /jobs`` body that ``chunks`` stream, decoded one by one with
    ``decode_job``, and the rest of the body. Splitting stops (the rest is kept whole
    from there) where it cannot be verified, or where ``secret`` (the token: the client
    redacts it from the whole rest) appears."""
    jobs: list[Any] = []
    chunks = _batched(chunks)
    head = b""  # the body up to the first job, once found
    delimiter = b""
    data = b""  # what is not decoded yet
    search = 0  # where the next delimiter is looked for in ``data``
    tries = 0
    for chunk in chunks:
        data = data + chunk if data else bytes(chunk)
        if secret and secret in data:
            return _whole(jobs, head, data, chunks)
        if not delimiter:
            found = _JOBS_START.search(data)
            if found is None:
                if len(data) > HEAD_LIMIT:
                    return _whole(jobs, head, data, chunks)
                continue
            if not _top_level(data[: found.start()]):
                return _whole(jobs, head, data, chunks)
            head, data = data[: found.start(1)], data[found.start(1):]
            delimiter, search = found.group(1), 1
        start = 0
        with memoryview(data) as view:
            while (end := data.find(delimiter, search)) >= 0:
                comma = data.rfind(b",", start, end)
                between = data[comma + 1:end] if comma > start else b"?"
                job = None if between.strip() else _decoded(decode_job, view[start:comma])
                if job is not None:
                    jobs.append(job)
                    start, tries = end, 0
                else:
                    tries += 1
                    if tries > MAX_TRIES:
                        return _whole(jobs, head, data[start:], chunks)
                search = end + 1
        search = max(search, len(data) - len(delimiter) + 1) - start  # what is left was searched
        data = data[start:]
    if not delimiter:
        return Split(jobs, data)
    return _last(jobs, head, data, decode_job)


def _batched(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` joined into pieces of at least ``BATCH`` bytes (the last one may be less)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        if not parts and len(chunk) >= BATCH:
            yield chunk
            continue
        parts.append(chunk)
        size += len(chunk)
        if size >= BATCH:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def _last(jobs: list[Any], head: bytes, data: bytes, decode_job: Callable[[memoryview], Any]) -> Split:
    """The body's end: the last job, the array's ``]`` and the envelope's tail. The job
    ends at one of the last ``]`` (the tail has a few of its own): the one where it decodes."""
    end = len(data)
    with memoryview(data) as view:
        for _ in range(MAX_TRIES):
            end = data.rfind(b"]", 0, end)
            if end <= 0:
                break
            job = _decoded(decode_job, view[:end])
            if job is not None:
                jobs.append(job)
                return Split(jobs, head + data[end:])
    return Split(jobs, head + data)


def _decoded(decode_job: Callable[[memoryview], Any], piece: memoryview) -> Any:
    try:
        return decode_job(piece)
    except msgspec.DecodeError:  # ValidationError too: not a whole job
        return None


def _top_level(before: bytes) -> bool:
    """Whether the text before a ``"jobs"`` key is an object's opening and whole members:
    the key is the answer's own, not a nested object's."""
    text = before.strip()
    if text == b"{":
        return True
    if not text.startswith(b"{") or not text.endswith(b","):
        return False
    try:
        return isinstance(msgspec.json.decode(text[:-1] + b"}"), dict)
    except msgspec.DecodeError:
        return False


def _whole(jobs: list[Any], head: bytes, data: bytes, chunks: Iterable[bytes]) -> Split:
    """Splitting stops: the rest of the body read into one buffer after what is left."""
    rest = bytearray(head)
    rest += data
    for chunk in chunks:
        rest += chunk
    return Split(jobs, rest)
