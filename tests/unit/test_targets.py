"""Several clusters from one deployment: SLURM_TARGETS names them; the plain SLURM_*
variables stay the zero-configuration default target."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slurm_trigger.settings import CLUSTER_VARIABLES, TARGET_INHERITS, Settings

SETTINGS_PY = Path(__file__).resolve().parents[2] / "slurm_trigger" / "settings.py"


def test_one_cluster_needs_no_configuration() -> None:
    settings = Settings.from_env({"SLURM_CLUSTER_NAME": "pc", "SLURM_URL": "https://10.0.0.5:8082"})
    assert settings.targets() == {"pc": settings}
    assert settings.target(None) is settings and settings.target("pc") is settings


def test_extra_targets_start_from_the_defaults() -> None:
    env = {
        "SLURM_CLUSTER_NAME": "pc", "SLURM_URL": "https://10.0.0.5:8082", "SLURM_TOKEN_SECRET": "slurm_token_pc",
        "SLURM_API_VERSION": "v0.0.42", "SLURM_READ_TIMEOUT": "12", "JOBS_TABLE": "jobs",
        "SLURM_TARGETS": json.dumps({
            "lab-pcs": {"SLURM_PCS_CLUSTER": "pcs_4ahbm6fbzy", "SLURM_USER": "alice", "SLURM_UID": 1001,
                        "SLURM_GID": 1001, "SLURM_API_VERSION": "v0.0.43"},
            "gpu": {"SLURM_URL": "https://10.0.9.9:8082", "SLURM_READ_TIMEOUT": "60", "SLURM_ALLOW_HTTP": True},
        }),
    }
    targets = Settings.from_env(env).targets()
    assert list(targets) == ["pc", "lab-pcs", "gpu"]
    pcs = targets["lab-pcs"]
    assert (pcs.cluster_name, pcs.pcs_cluster, pcs.slurm_uid, pcs.api_version) == ("lab-pcs", "pcs_4ahbm6fbzy", 1001, "v0.0.43")
    assert pcs.slurm_url is None and pcs.token_secret is None  # not the default target's
    assert pcs.read_timeout == 12.0 and pcs.jobs_table == "jobs"  # timeouts and the rest carry over
    gpu = targets["gpu"]
    assert (gpu.slurm_url, gpu.read_timeout, gpu.allow_http, gpu.secret_id) == (
        "https://10.0.9.9:8082", 60.0, True, "slurm_token_gpu")


@pytest.mark.parametrize("value,match", [
    ("not json", "not JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"x": {"JOBS_TABLE": "t"}}', "JOBS_TABLE cannot be set per target"),
    ('{"x": {"SLURM_CLUSTER_NAME": "y"}}', "drop SLURM_CLUSTER_NAME"),
    ('{"pc": {"SLURM_URL": "https://a"}}', "already the default target's name"),
])
def test_bad_targets_are_refused_clearly(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Settings.from_env({"SLURM_CLUSTER_NAME": "pc", "SLURM_TARGETS": value}).targets()


def test_unknown_target() -> None:
    with pytest.raises(ValueError, match="no target 'nope': the targets are pc"):
        Settings.from_env({"SLURM_CLUSTER_NAME": "pc"}).target("nope")


def test_every_cluster_variable_can_be_set_per_target() -> None:
    """CLUSTER_VARIABLES lists what from_env reads for the cluster, and each entry moves
    its field: a variable added to from_env but not here fails."""
    read = set(re.findall(r'g\("(SLURM_[A-Z_]+)"', SETTINGS_PY.read_text())) - {"SLURM_TARGETS"}
    assert read == set(CLUSTER_VARIABLES)
    assert set(TARGET_INHERITS.values()) <= set(CLUSTER_VARIABLES)
    defaults = Settings()
    for var, field in CLUSTER_VARIABLES.items():
        value = {"SLURM_USE_PUBLIC_IP": "true", "SLURM_INSECURE": "true", "SLURM_ALLOW_HTTP": "true"}.get(var, "7")
        assert getattr(Settings.from_env({var: value}), field) != getattr(defaults, field), var
