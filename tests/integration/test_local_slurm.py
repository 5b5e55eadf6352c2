"""The harness itself: every version the local clusters serve answers a ping with UP."""
from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.real_slurm


def test_ping_is_up(slurm_target):
    r = requests.get(slurm_target.api("/ping"), headers=slurm_target.headers(), timeout=10)
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    plugin = body["meta"]["plugin"]  # 22.05: type openapi/v0.0.38; 24.11: data_parser/v0.0.4x
    assert (plugin.get("data_parser") or plugin["type"]).endswith(slurm_target.version)
    assert not body.get("errors"), body["errors"]
    pings = body["pings"]
    # 22.05 (v0.0.38) says "ping", 24.11 "pinged"; v0.0.45 only "responding" and "status"
    if slurm_target.version == "v0.0.45":
        assert [(p["responding"], p["status"]) for p in pings] == [(True, "No error")] * len(pings)
    else:
        assert [p.get("pinged") or p.get("ping") for p in pings] == ["UP"] * len(pings)
    assert pings


def test_version_is_served(slurm_target):
    r = requests.get(f"{slurm_target.url}/openapi/v3", headers=slurm_target.headers(), timeout=30)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert any(p.startswith(f"/slurm/{slurm_target.version}/") for p in paths)


def test_workdir_maps_to_host(slurm_target):
    host_dir = slurm_target.host_path(slurm_target.workdir)
    assert host_dir.is_dir()
    assert host_dir.stat().st_mode & 0o1777 == 0o1777
