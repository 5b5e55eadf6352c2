"""One log line per record, as JSON, in a container as Lambda runs it: ``app.py`` (Chalice)
imported first, then the library on the first event."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINER = """
import app  # Chalice(app_name="slurm-trigger"): the Logger's service name is the app's name
from slurm_trigger.observability import logger
from slurm_trigger.settings import Settings
from slurm_trigger.slurm import build_client
logger.info("from the trigger", extra={"cluster": "c"})
build_client(Settings(slurm_url="http://10.0.0.5:6820", token="a.b.c", allow_http=True))  # the client's warning
"""


def test_each_record_is_one_json_line() -> None:
    env = {**os.environ, "SUBSCRIPTIONS": "sqs", "INPUT_QUEUE": "q", "POWERTOOLS_LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-c", CONTAINER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # nothing but JSON
    assert [(line["message"], line["service"], line["level"]) for line in lines] == [
        ("from the trigger", "slurm-trigger", "INFO"),
        ("plain HTTP to slurmrestd: tokens cross the VPC unencrypted; keep them short-lived and the "
         "security group tight", "slurm-trigger", "WARNING"),
    ]
    assert lines[0]["cluster"] == "c" and lines[1]["url"] == "http://10.0.0.5:6820"
    assert done.stderr == ""
