"""Sets of objects: which objects form one set, and when it is complete.

A pipeline with a ``collect`` section turns a *set* of objects into one job (or one
job array), not each object. Five ways to say when a set is complete:

* ``members: [R1, R2]`` with a ``pattern`` and its ``member`` capture: every listed
  member is present (paired-end reads, by their real Illumina names);
* ``count: N``: N distinct members are present (16 satellite bands of one scan);
* ``window: 10m``: whatever arrived within the window after the first member (feeds
  without markers), or N when ``count`` is given too, whichever comes first;
* ``manifest: manifest.txt``: a manifest in the set's folder lists the members;
  complete when it and all of them are present, whichever lands last;
* ``marker: CopyComplete.txt``: the marker landed; the set is every object under the
  marker's folder that the pipeline's ``match`` accepts (listed from S3 then).

The set's identity comes from the key alone (the pattern's captures other than the
member, or the object's folder), so every member finds its set without a lookup.
Keys are untrusted: captures are checked like any template value, and members reach
the job only through its environment, never its script.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from slurm_trigger.s3events import ObjectRef
from slurm_trigger.templating import VARIABLES, check_value

_FIELDS = {"pattern", "member", "members", "count", "window", "deadline", "manifest", "marker", "name", "as", "throttle"}
_DURATION = re.compile(r"(\d+)\s*([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEMBER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# Variables a set's template may use besides the pattern's captures.
SET_VARIABLES = ("bucket", "pipeline", "idempotency_key", "set", "folder", "member_count")
MAX_ARRAY = 10_000  # AWS Batch's limit; Slurm's MaxArraySize (default 1001) refuses sooner


def duration(value: Any, what: str) -> int:
    """``90``, ``"90s"``, ``"10m"``, ``"6h"``, ``"1d"`` → seconds (> 0)."""
    match = _DURATION.match(str(value).strip()) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    seconds = int(match.group(1)) * _UNITS[match.group(2)] if match else 0
    if seconds <= 0:
        raise ValueError(f"{what} must be a duration such as 90s, 10m, 6h or 1d")
    return seconds


@dataclass(frozen=True)
class Place:
    """Where one object belongs: its set and its name in it."""

    set_id: str  # the set's idempotency key: also the key of its record and its job's claim
    name: str  # readable: the folder, or the captures joined by "/"
    member: str
    captures: Mapping[str, str] = field(default_factory=dict)
    folder: str = ""


@dataclass(frozen=True)
class Collect:
    kind: str  # members | count | manifest | marker
    pattern: re.Pattern[str] | None = None
    member: str | None = None
    members: tuple[str, ...] = ()
    count: int | None = None
    window: int | None = None  # seconds after the first member
    deadline: int | None = None  # seconds after the first member: report if still incomplete
    manifest: str | None = None
    marker: str | None = None
    name: str | None = None  # "{sample}_L{lane}": the set's readable name from the captures
    array: bool = False
    throttle: int | None = None

    # --- which set an object belongs to
    @property
    def captures(self) -> tuple[str, ...]:
        """The pattern's captures that identify the set (all but the member's)."""
        groups = self.pattern.groupindex if self.pattern else {}
        return tuple(g for g in groups if g != self.member)

    def is_control(self, ref: ObjectRef) -> bool:
        """The marker or manifest object itself (never a member)."""
        control = self.marker or self.manifest
        return control is not None and posixpath.basename(ref.key) == control

    def place(self, pipeline: str, ref: ObjectRef) -> Place | None:
        """The set ``ref`` belongs to, or None when it is no member (the pattern
        does not match, or a member name not listed). Raises ``UnsafeValueError``
        for a key with a control character (so every capture is clean too)."""
        check_value("key", ref.key)  # a key with a control character is no member of anything
        folder = posixpath.dirname(ref.key)
        if self.pattern is None:
            identity: dict[str, str] = {"folder": folder}
            member, name, captures = posixpath.basename(ref.key), folder, {}
        else:
            found = self.pattern.fullmatch(ref.key)
            if found is None:
                return None
            captures = {g: found.group(g) or "" for g in self.captures}
            member = found.group(self.member) if self.member else ref.key
            if self.members and member not in self.members:
                return None
            identity = captures
            name = self._name(captures)
        if self.kind == "marker":  # a new marker version is a new run
            identity = {**identity, "marker": ref.version_id or f"{ref.etag}:{ref.sequencer}"}
        return Place(set_key(pipeline, ref.bucket, identity), name, member, captures, folder)

    def _name(self, captures: Mapping[str, str]) -> str:
        if self.name:
            return _PLACEHOLDER.sub(lambda m: captures[m.group(1)], self.name)
        return "/".join(captures[g] for g in self.captures)

    # --- what the set becomes
    @property
    def span(self) -> int | None:
        """Seconds after the first member when the scheduled check must look at an
        open set: its window's end, or its deadline."""
        return self.window or self.deadline

    def complete(self, present: Mapping[str, Any], expected: tuple[str, ...] | None) -> bool:
        """Whether the members present make the set complete (marker sets are
        complete when the marker lands, window sets also when the window ends)."""
        if self.kind == "members":
            return all(m in present for m in self.members)
        if self.kind == "count":
            return self.count is not None and len(present) >= self.count
        if self.kind == "manifest":
            return expected is not None and all(m in present for m in expected)
        return False

    def order(self, present: Mapping[str, Any], expected: tuple[str, ...] | None) -> list[str]:
        """The members of a set that fires, in task order: as listed (``members``,
        manifest), else sorted, so a re-rendered job is the same job."""
        if self.kind == "members":
            return [m for m in self.members if m in present]
        if self.kind == "manifest" and expected is not None:
            return [m for m in expected if m in present]
        return sorted(present)

    def missing(self, present: Mapping[str, Any], expected: tuple[str, ...] | None) -> list[str] | None:
        """What an incomplete set still lacks, when that is known."""
        if self.kind == "members":
            return [m for m in self.members if m not in present]
        if self.kind == "manifest":
            return [self.manifest or ""] if expected is None else [m for m in expected if m not in present]
        return None

    def array_spec(self, count: int) -> str:
        """Slurm's ``--array`` for one task per member, with the ``%`` throttle."""
        return f"0-{count - 1}" + (f"%{self.throttle}" if self.throttle else "")


def set_key(pipeline: str, bucket: str, identity: Mapping[str, str]) -> str:
    """Stable for one set of one pipeline; hashed like object keys (holds nothing of
    the untrusted keys; Slurm's comment search finds it)."""
    material = json.dumps([pipeline, bucket, "set", sorted(identity.items())], ensure_ascii=False)
    return "st-" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


def manifest_members(text: str) -> tuple[str, ...]:
    """A manifest: one member per line, relative to the manifest's folder; blank
    lines and ``#`` comments skipped. Refuses what cannot be a member there."""
    members = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        check_value(f"manifest line {number}", line)
        if line.startswith("/") or "/" in line:
            raise ValueError(f"manifest line {number}: {line!r} is not a file in the manifest's folder")
        members.append(line)
    if not members:
        raise ValueError("the manifest lists no member")
    return tuple(dict.fromkeys(members))


def parse(data: Any, *, template_array: str | None) -> Collect:
    """The ``collect`` section of a pipeline file."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError("'collect' must be an object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown collect field(s) {', '.join(unknown)}")
    kinds = [k for k in ("members", "count", "manifest", "marker") if k in data]
    if "window" in data and "count" not in kinds:
        kinds.append("count")
    if len(kinds) != 1:
        raise ValueError("'collect' needs exactly one of members, count (and/or window), manifest, marker")
    kind = kinds[0]
    pattern = None
    if data.get("pattern") is not None:
        try:
            pattern = re.compile(str(data["pattern"]))
        except re.error as exc:
            raise ValueError(f"'collect.pattern' is not a regular expression: {exc}") from None
    member = data.get("member")
    if member is not None and (pattern is None or member not in pattern.groupindex):
        raise ValueError("'collect.member' must name a capture (?P<name>...) of 'collect.pattern'")
    members: tuple[str, ...] = ()
    if kind == "members":
        if pattern is None or member is None:
            raise ValueError("'collect.members' needs a 'pattern' and the 'member' capture that names each member")
        raw = data["members"]
        if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(m, str) and _MEMBER_NAME.match(m) for m in raw):
            raise ValueError("'collect.members' must list two or more names of A-Z a-z 0-9 _ (e.g. [R1, R2])")
        members = tuple(dict.fromkeys(raw))
    if kind in ("manifest", "marker"):
        control = data[kind]
        if pattern is not None:
            raise ValueError(f"'collect.{kind}' sets are the {kind}'s folder: no 'pattern'")
        if not isinstance(control, str) or not control or "/" in control:
            raise ValueError(f"'collect.{kind}' must be a file name (e.g. CopyComplete.txt)")
    if pattern is not None:
        clash = sorted(set(pattern.groupindex) & (set(VARIABLES) | set(SET_VARIABLES)))
        if clash:
            raise ValueError(f"capture name(s) {', '.join(clash)} are template variables already: rename them")
        # a capture's value is also the job's SLURM_TRIGGER_<NAME>: keep clear of the members'
        if any(g.lower().startswith("member") for g in pattern.groupindex if g != member):
            raise ValueError("capture names starting with 'member' are the members' variables: rename them")
    count = data.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ValueError("'collect.count' must be a positive integer")
    window = duration(data["window"], "'collect.window'") if "window" in data else None
    deadline = duration(data["deadline"], "'collect.deadline'") if "deadline" in data else None
    if window and deadline:
        raise ValueError("a window set fires when its window ends: give 'window' or 'deadline', not both")
    if kind == "marker" and deadline:
        raise ValueError("a marker set is complete when its marker lands: it has no 'deadline'")
    shape = data.get("as", "job")
    if shape not in ("job", "array"):
        raise ValueError("'collect.as' must be job (one job sees every member) or array (one task per member)")
    throttle = data.get("throttle")
    if throttle is not None and (shape != "array" or not isinstance(throttle, int) or throttle < 1):
        raise ValueError("'collect.throttle' is a positive integer, for 'as: array' only")
    if shape == "array" and template_array:
        raise ValueError("'as: array' makes the job's array itself: remove 'job.array'")
    name = data.get("name")
    if name is not None:
        used = set(_PLACEHOLDER.findall(str(name)))
        if pattern is None or not used <= set(pattern.groupindex) - {member}:
            raise ValueError("'collect.name' may only use {captures} of the pattern (not the member)")
        name = str(name)
    return Collect(
        kind=kind,
        pattern=pattern,
        member=member,
        members=members,
        count=count,
        window=window,
        deadline=deadline,
        manifest=data.get("manifest"),
        marker=data.get("marker"),
        name=name,
        array=shape == "array",
        throttle=throttle,
    )


def template_variables(spec: Collect) -> tuple[str, ...]:
    """What a set pipeline's template may use: the set's own values and the
    pattern's captures (lower-case names only; the member's is not a set value)."""
    return SET_VARIABLES + tuple(c for c in spec.captures if re.fullmatch(r"[a-z][a-z0-9_]*", c))


def member_environment(spec: Collect, members: list[tuple[str, str]]) -> dict[str, str]:
    """The job's view of its members (name, key) in task order: ``SLURM_TRIGGER_MEMBERS``
    (keys, one per line: keys hold no control character), ``SLURM_TRIGGER_MEMBER_COUNT``,
    ``SLURM_TRIGGER_MEMBER_<i>`` (an array task reads its own with
    ``SLURM_TRIGGER_MEMBER_$SLURM_ARRAY_TASK_ID``) and, for named members,
    ``SLURM_TRIGGER_MEMBER_<name>``."""
    env = {
        "SLURM_TRIGGER_MEMBERS": "\n".join(key for _, key in members),
        "SLURM_TRIGGER_MEMBER_COUNT": str(len(members)),
    }
    for i, (name, key) in enumerate(members):
        env[f"SLURM_TRIGGER_MEMBER_{i}"] = key
        if spec.kind == "members":
            env[f"SLURM_TRIGGER_MEMBER_{name}"] = key
    return env
