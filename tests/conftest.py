"""Shared fixtures.

``slurm_target``: one real slurmrestd per (cluster, API version) served by the local clusters
that ``scripts/local-slurm start`` runs (it writes ``$SLURM_TRIGGER_STATE/clusters.json``); ids
name the Slurm release and the version (``24.11-v0.0.42``, ``26.05-v0.0.42``).
Nothing here starts a cluster. When the file is missing or a slurmrestd does not answer,
the test is skipped with a hint, or FAILS when ``CI=true`` (CI must never pass by skipping).

``aws``: moto's ``mock_aws()`` with fake credentials and region us-east-1.

``logged``: what the project's one Logger (Powertools) writes, its JSON lines, at DEBUG.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
LOCAL_SLURM = REPO / "scripts" / "local-slurm"
STATE = Path(os.environ.get("SLURM_TRIGGER_STATE") or "/var/tmp/slurm-trigger")
CLUSTERS_FILE = STATE / "clusters.json"
WORKDIR = "/tmp/slurm-trigger-jobs"
# (cluster, version) pairs the local clusters serve: 22.05 on the host, 24.11 in the trixie
# chroot, 26.05 with slurmdbd in the forky chroot. Under CI they are always parametrized, even
# without clusters.json, so a missing cluster fails visibly.
EXPECTED_TARGETS = (
    ("host", "v0.0.38"),
    ("chroot", "v0.0.40"), ("chroot", "v0.0.41"), ("chroot", "v0.0.42"),
    ("forky", "v0.0.42"), ("forky", "v0.0.43"), ("forky", "v0.0.44"), ("forky", "v0.0.45"),
)
# Test ids say which Slurm: 22.05-v0.0.38, 24.11-v0.0.42, 26.05-v0.0.42 ...
RELEASES = {"host": "22.05", "chroot": "24.11", "forky": "26.05"}
REGION = "us-east-1"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def not_available(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    hint = f"{reason} (run `sudo scripts/local-slurm start`)"
    if in_ci():
        pytest.fail(f"CI=true and the local Slurm is not usable: {hint}", pytrace=False)
    pytest.skip(hint)


def read_clusters() -> list[dict[str, Any]]:
    from slurm_trigger_dev.localrun import local_clusters

    return local_clusters(STATE)


# --------------------------------------------------------------------------- slurm targets


@dataclass
class SlurmTarget:
    """One API version of one local cluster, as a test sees it."""

    name: str  # "host" | "chroot" | "forky": the cluster name for scripts/local-slurm
    url: str  # http://127.0.0.1:6820
    version: str  # "v0.0.42"
    user: str  # X-SLURM-USER-NAME and the job user
    cluster: str  # Slurm ClusterName
    root: str  # where the job's filesystem starts, seen from the host
    workdir: str = WORKDIR  # a working directory writable by `user`, in the job's view
    accounting: bool = False  # slurmdbd behind it (/slurmdb/ served)
    slurm: str = ""  # the Slurm release ("26.05.5-1")
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def token(self, fresh: bool = False) -> str:
        """A JWT for ``user`` from ``scripts/local-slurm token NAME`` (cached per session)."""
        return _token(self.name, fresh=fresh)

    def headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self.token()}

    def api(self, path: str = "") -> str:
        """``api("/ping")`` -> ``http://127.0.0.1:6830/slurm/v0.0.42/ping``."""
        return f"{self.url}/slurm/{self.version}{path}"

    def jwt_key_path(self) -> Path:
        """The cluster's HS256 signing key, as its slurm.conf names it (AuthAltParameters
        jwt_key=...), seen from the host: what a minted token is signed with."""
        conf = self.host_path("/etc/slurm/slurm.conf").read_text()
        found = re.search(r"^AuthAltParameters=.*?\bjwt_key=([^,\s]+)", conf, re.MULTILINE)
        assert found, f"no jwt_key in {self.name}'s slurm.conf"
        return self.host_path(found.group(1))

    def host_path(self, path: str) -> Path:
        """A path as the job sees it -> the same file on the host filesystem."""
        p = Path(path)
        if not p.is_absolute():
            p = Path(self.workdir) / p
        root = Path(self.root or "/")
        return root / p.relative_to("/")


_TOKEN_CACHE: dict[str, str] = {}
_HEALTH: dict[str, str | None] = {}


def _token(name: str, fresh: bool = False) -> str:
    if fresh or name not in _TOKEN_CACHE:
        try:
            out = subprocess.run(
                [str(LOCAL_SLURM), "token", name, "14400"],
                check=True, capture_output=True, text=True, timeout=60,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            not_available(f"no token from scripts/local-slurm token {name}: {exc}")
        if not out.startswith("eyJ"):
            not_available(f"scripts/local-slurm token {name} printed no JWT")
        _TOKEN_CACHE[name] = out
    return _TOKEN_CACHE[name]


def _health(cluster: dict[str, Any]) -> str | None:
    """None when the cluster's slurmrestd answers a ping with UP, else why not (cached)."""
    name = cluster["name"]
    if name not in _HEALTH:
        versions = cluster.get("versions") or []
        if not versions:
            _HEALTH[name] = f"cluster {name} serves no API version in {CLUSTERS_FILE}"
            return _HEALTH[name]
        try:
            token = _token(name)
        except pytest.skip.Exception as exc:  # keep the reason, don't skip here
            _HEALTH[name] = str(exc)
            return _HEALTH[name]
        url = f"{cluster['url']}/slurm/{versions[-1]}/ping"
        try:
            r = requests.get(
                url, headers={"X-SLURM-USER-NAME": cluster["user"], "X-SLURM-USER-TOKEN": token}, timeout=10
            )
            body = r.json() if r.status_code == 200 else {}
            pings = body.get("pings") or []
            # 22.05 says "ping", 24.11 "pinged", v0.0.45 only "responding"
            up = any((p.get("pinged") or p.get("ping")) == "UP" or p.get("responding") is True
                     for p in pings)
            _HEALTH[name] = None if up else f"{url} answered {r.status_code} without UP"
        except (requests.RequestException, ValueError) as exc:
            _HEALTH[name] = f"slurmrestd of cluster {name} does not answer at {url}: {exc}"
    return _HEALTH[name]


def _release(cluster: dict[str, Any]) -> str:
    """``26.05`` from clusters.json's ``slurm`` (``26.05.5-1``), else the cluster's name."""
    parts = str(cluster.get("slurm") or "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else RELEASES.get(cluster["name"], cluster["name"])


def _target_params() -> list[Any]:
    """One param per (cluster, version) served, id ``<Slurm release>-<version>``; the
    expected ones are always there (a missing cluster skips, or fails under CI)."""
    seen: dict[tuple[str, str], str] = {}
    for c in read_clusters():
        for v in c.get("versions") or []:
            seen[(c["name"], v)] = _release(c)
    for name, v in EXPECTED_TARGETS:
        seen.setdefault((name, v), RELEASES[name])
    order = sorted(seen, key=lambda t: (seen[t], tuple(int(x) for x in t[1][1:].split("."))))
    return [
        pytest.param((v, name), id=f"{seen[(name, v)]}-{v}", marks=pytest.mark.real_slurm)
        for name, v in order
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "slurm_target" in metafunc.fixturenames:
        metafunc.parametrize("slurm_target", _target_params(), indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # anything that needs a real cluster is selectable with -m real_slurm
        if "slurm_target" in getattr(item, "fixturenames", ()) or "slurm_clusters" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.real_slurm)


@pytest.fixture(scope="session")
def slurm_clusters() -> dict[str, dict[str, Any]]:
    """The clusters listed in clusters.json, by name. Starts nothing."""
    clusters = read_clusters()
    if not clusters:
        not_available(f"{CLUSTERS_FILE} is missing or empty")
    return {c["name"]: c for c in clusters}


@pytest.fixture
def slurm_target(request: pytest.FixtureRequest) -> SlurmTarget:
    version, name = request.param
    clusters = {c["name"]: c for c in read_clusters()}
    cluster = clusters.get(name)
    if cluster is None:
        not_available(f"cluster {name} not in {CLUSTERS_FILE}")
    if version not in (cluster.get("versions") or ()):
        not_available(f"cluster {name} does not serve {version} ({CLUSTERS_FILE})")
    problem = _health(cluster)
    if problem:
        not_available(problem)
    return SlurmTarget(
        name=name,
        url=cluster["url"].rstrip("/"),
        version=version,
        user=cluster["user"],
        cluster=cluster.get("cluster", name),
        root=cluster.get("root") or "/",
        workdir=cluster.get("workdir") or WORKDIR,
        accounting=bool(cluster.get("accounting")),
        slurm=str(cluster.get("slurm") or ""),
    )


# --------------------------------------------------------------------------- AWS (moto)

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    """moto's ``mock_aws()`` (yielded) with fake credentials, region us-east-1."""
    from moto import mock_aws

    for k, v in FAKE_AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    with mock_aws() as mock:
        yield mock


# --------------------------------------------------------------------------- log lines


@dataclass
class Logged:
    """What the project's Powertools Logger wrote while a test ran: its JSON lines, as
    CloudWatch Logs gets them. Our modules log through no other logger."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def lines(self) -> list[dict[str, Any]]:
        """Each line decoded; anything but JSON fails the test (Lambda would get it)."""
        text, decoder, at, out = self.stream.getvalue(), json.JSONDecoder(), 0, []
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at == len(text):
                return out
            line, at = decoder.raw_decode(text, at)
            out.append(line)

    @property
    def text(self) -> str:
        """What a leak test searches: the lines as written, then every key and value of
        every field (``extra`` ones, ``exception`` tracebacks) decoded, so one JSON
        escapes (a CR/LF inside a token) still reads as itself."""
        return "\n".join([self.stream.getvalue(), *(leaf for line in self.lines for leaf in _leaves(line))])


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield str(value)


@pytest.fixture
def logged() -> Iterator[Logged]:
    """The Logger's output stream swapped for a buffer, at DEBUG, for one test."""
    from slurm_trigger.observability import logger

    out = Logged()
    handler = logger.registered_handler
    stream, level = handler.setStream(out.stream), logger.log_level
    logger.setLevel("DEBUG")
    try:
        yield out
    finally:
        handler.setStream(stream)
        logger.setLevel(level)
