"""The slurm subcommands end to end through ``slurm_trigger_cli.main``, against the local
replay server of test_client_http (recorded answers of v0.0.38, v0.0.42 and v0.0.45)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import pytest
from conftest import Logged

from slurm_trigger.observability import logger
from slurm_trigger_cli import main
from slurm_trigger_cli.slurm_commands import job_to_dict
from test_client_http import GOOD, FakeSlurm, recorded, replay, reply_from  # sibling test module

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "job.json"
COMMANDS = ("ping", "diag", "versions", "submit-job", "list-jobs", "describe-job", "get-job", "cancel-job")


@pytest.fixture(params=["v0.0.38", "v0.0.42", "v0.0.45"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeSlurm, str]]:
    for name in ("SLURM_URL", "SLURM_TOKEN", "SLURM_API_VERSION", "SLURM_USER"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeSlurm()
    replay(fake, request.param)
    yield fake, request.param
    fake.close()


def run(fake: FakeSlurm, capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([argv[0], "--url", fake.url, "--token", GOOD, "-u", "alice", *argv[1:]])
    out, err = capsys.readouterr()
    assert GOOD not in out and GOOD not in err
    return code, out, err


def job_id(version: str, name: str) -> str:
    return recorded(version)[name]["path"].rsplit("/", 1)[1]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    name = {"get-job": "describe-job"}.get(command, command)  # the blog's slurmapi.py name, an alias
    assert f"slurm-trigger {name}" in out and "--cluster-name" in out and "--format" in out


def test_versions_and_ping(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, version = server
    code, out, _ = run(fake, capsys, "versions")
    [data] = json.loads(out)
    assert code == 0 and data["negotiated"] == version and version in data["served"]
    assert data["accounting"] is (version == "v0.0.45")  # only that recording has slurmdbd
    assert "v0.0.43" in data["known"] and data["target"] == "local"
    code, out, _ = run(fake, capsys, "ping")
    assert code == 0 and json.loads(out)["pings"][0]["status"] == "UP"
    code, out, _ = run(fake, capsys, "ping", "--format", "table")
    assert out.splitlines()[0].split() == ["HOSTNAME", "STATUS", "MODE", "LATENCY"]


def test_diag(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, _ = server
    code, out, _ = run(fake, capsys, "diag")
    assert code == 0 and "statistics" in json.loads(out) and "meta" not in json.loads(out)
    code, out, _ = run(fake, capsys, "diag", "--format", "table")
    assert out.startswith("STATISTIC") and "jobs_submitted" in out


def test_submit_job_file_and_stdin(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake, version = server
    expected = json.loads(Path(f"tests/fixtures/recorded/{version}/submit.json").read_text())["job_id"]
    code, out, _ = run(fake, capsys, "submit-job", "-j", str(EXAMPLE))
    assert code == 0 and json.loads(out)["job_id"] == expected
    posted = fake.seen[-1].body
    assert posted["job"]["name"] == "hello-slurm-trigger"
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    code, out, _ = run(fake, capsys, "submit-job", "-j", "-")
    assert code == 0 and json.loads(out)["version"] == version


def test_submit_print_body_does_not_submit(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, version = server
    code, out, _ = run(fake, capsys, "submit-job", "-j", str(EXAMPLE), "--print-body")
    body = json.loads(out)["body"]
    assert code == 0 and ("script" in body) == (version == "v0.0.38")
    assert not [s for s in fake.seen if s.method == "POST"]


def test_bad_job_file(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    fake, _ = server
    bad = tmp_path / "job.json"
    bad.write_text(json.dumps({"script": "#!/bin/sh\n", "bogus": 1}))
    code, _, err = run(fake, capsys, "submit-job", "-j", str(bad))
    assert code == 2 and "bogus" in err


def test_list_and_describe(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, version = server
    code, out, _ = run(fake, capsys, "list-jobs")
    data = json.loads(out)
    assert code == 0 and data["changed"] and data["jobs"]
    assert all(j["submit_time"].endswith("+00:00") for j in data["jobs"])
    code, out, _ = run(fake, capsys, "list-jobs", "--format", "table")
    assert out.splitlines()[0].split()[:3] == ["JOB_ID", "NAME", "STATE"]
    code, out, _ = run(fake, capsys, "describe-job", "-j", job_id(version, "job-failed.json"))
    job = json.loads(out)
    assert code == 0 and (job["state"], job["exit_code"], job["is_final"]) == ("FAILED", 3, True)
    code, out, _ = run(fake, capsys, "describe-job", "-j", job_id(version, "job-failed.json"), "--format", "table")
    assert "NonZeroExitCode" in out


def test_describe_unknown_job_fails_with_slurms_error(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, _ = server
    code, _, err = run(fake, capsys, "describe-job", "-j", "999999")
    assert code == 1
    [line] = err.splitlines()  # one line, not a JSON dump and a line
    assert line.startswith("slurm-trigger: SlurmNotFoundError: ") and "Invalid job id specified" in line


def test_describe_falls_back_to_accounting(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    """A job that left slurmctld (404 there): slurmdbd's record when the cluster has accounting."""
    fake, version = server
    gone = job_id(version, "job-completed.json")
    fake.add("GET", f"/slurm/{version}/job/{gone}", reply_from(version, "job-not-found.json"))
    code, out, err = run(fake, capsys, "describe-job", "-j", gone)
    if version != "v0.0.45":  # recorded without slurmdbd: still Slurm's own error
        assert code == 1 and "SlurmNotFoundError" in err
        return
    job = json.loads(out)
    assert code == 0 and job["source"] == "accounting" and job["job_id"] == int(gone)
    assert (job["state"], job["exit_code"], job["is_final"]) == ("COMPLETED", 0, True)
    code, out, _ = run(fake, capsys, "describe-job", "-j", job_id(version, "job-failed.json"))
    assert json.loads(out)["source"] == "slurmctld"


def test_cancel(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    fake, version = server
    code, out, _ = run(fake, capsys, "cancel-job", "-j", job_id(version, "cancel-running.json"))
    assert code == 0 and json.loads(out) == {"job_id": int(job_id(version, "cancel-running.json")), "cancelled": True}
    assert fake.seen[-1].method == "DELETE"


def test_auth_error_exit_code_without_token(capsys: pytest.CaptureFixture) -> None:
    fake = FakeSlurm()
    try:
        fake.add("GET", "/slurm/v0.0.42/ping", reply_from("v0.0.42", "error-bad-token-ping.json"))
        code, _, err = run(fake, capsys, "ping", "--api-version", "v0.0.42")
    finally:
        fake.close()
    assert code == 1 and "SlurmAuthError" in err


def test_job_to_dict_is_json_ready() -> None:
    from slurm_trigger.slurm.dialects import DIALECTS

    raw = json.loads(Path("tests/fixtures/recorded/v0.0.42/job-completed.json").read_text())["jobs"][0]
    data = job_to_dict(DIALECTS["v0.0.42"].parse_job(raw))
    assert json.loads(json.dumps(data)) == data and "raw" not in data
    assert isinstance(data["state_flags"], list)


def test_global_options_before_the_command(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture) -> None:
    """The seed's order (``slurmapi.py -n … submit-job …``) works as well as ours."""
    fake, _ = server
    code = main(["--url", fake.url, "--token", GOOD, "-u", "alice", "--format", "table", "submit-job", "-j", str(EXAMPLE)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert GOOD not in out and GOOD not in err
    assert fake.seen[-1].method == "POST" and fake.seen[-1].headers["X-SLURM-USER-NAME"] == "alice"


def test_log_lines_are_plain_text_on_stderr(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                            logged: Logged, monkeypatch: pytest.MonkeyPatch) -> None:
    """A person reads the Logger's lines: plain text on stderr, warnings and up unless
    POWERTOOLS_LOG_LEVEL says more; stdout stays the command's output alone. After the
    command, the Logger writes its JSON lines again (the CLI runs in-process here)."""
    fake, version = server
    monkeypatch.delenv("POWERTOOLS_LOG_LEVEL", raising=False)
    code, out, err = run(fake, capsys, "ping", "--insecure")
    assert code == 0 and json.loads(out)["pings"]
    assert err.splitlines() == ["slurm-trigger: warning: TLS verification is OFF for the Slurm REST API "
                                "(insecure=True); anyone on the path can read the token. Use "
                                "ca_bundle/ca_secret/ca_parameter. (cluster=local)"]
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "debug")
    code, out, err = run(fake, capsys, "ping")
    assert code == 0 and json.loads(out)["pings"]
    assert f"slurm-trigger: debug: slurmrestd version chosen (url={fake.url}, version={version}, served=[" in err
    assert logged.lines == []  # nothing of the commands' went to the JSON stream
    logger.warning("after the command", extra={"cluster": "c"})
    assert [(line["message"], line["cluster"]) for line in logged.lines] == [("after the command", "c")]


def one_line(err: str) -> str:
    """The CLI's error: a single ``slurm-trigger: …`` line, no traceback."""
    [line] = err.splitlines()
    assert line.startswith("slurm-trigger: ") and "Traceback" not in line
    return line


def test_no_token_and_no_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    """``--url`` without ``--token`` reads the token secret, and a laptop has no AWS region."""
    for name in ("SLURM_TOKEN", "SLURM_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    code = main(["ping", "--url", "http://127.0.0.1:9", "-u", "alice"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "AWS_DEFAULT_REGION" in line and "--token" in line
    code = main(["status"])  # the tracker's table: AWS itself, no flag avoids it
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "AWS_DEFAULT_REGION" in line and "--token" not in line


def test_url_without_scheme(capsys: pytest.CaptureFixture) -> None:
    """``--url 127.0.0.1:6830`` (no http://) is a setting to fix, not a head node to retry."""
    code = main(["ping", "--url", "127.0.0.1:6830", "--token", GOOD, "-u", "alice"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "'127.0.0.1:6830'" in line and "https://" in line


def test_ctrl_c_and_the_unforeseen_are_one_line(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from slurm_trigger.slurm.client import SlurmClient

    fake, _ = server
    monkeypatch.setattr(SlurmClient, "ping", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, _, err = run(fake, capsys, "ping")
    assert code == 130 and one_line(err) == "slurm-trigger: interrupted"
    monkeypatch.setattr(SlurmClient, "ping", lambda self: (_ for _ in ()).throw(RuntimeError(f"bad {GOOD}\nhere")))
    code, _, err = run(fake, capsys, "ping")  # run() checks the token is nowhere
    assert code == 1 and one_line(err) == "slurm-trigger: unexpected RuntimeError: bad [REDACTED] here"


def test_a_dead_port_and_https_to_plain_http(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause in a few words, not urllib3's nested "HTTPConnectionPool(…): Max retries
    exceeded … (Caused by NewConnectionError(…))"; https:// to a plain HTTP slurmrestd
    is not a certificate to configure."""
    import socket

    fake, _ = server
    monkeypatch.setenv("SLURM_RETRIES", "0")  # the same line after the retries, sooner
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        code = main(["ping", "--url", f"http://127.0.0.1:{port}", "--token", GOOD, "-u", "alice"])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and line == (f"slurm-trigger: SlurmUnavailableError: could not reach slurmrestd (GET "
                                  f"http://127.0.0.1:{port}/openapi/v3: Failed to establish a new connection: "
                                  "[Errno 111] Connection refused)")
    code = main(["ping", "--url", fake.url.replace("http://", "https://"), "--token", GOOD, "-u", "alice"])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "does not speak TLS" in line and "http://" in line and "Max retries" not in line, line


def test_ctrl_c_during_a_submit_says_the_job_may_exist(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while POST /job/submit waits: Slurm may have made the job. Unknown, said so."""
    from slurm_trigger.slurm.client import SlurmClient

    fake, _ = server
    monkeypatch.setattr(SlurmClient, "submit", lambda self, sub: (_ for _ in ()).throw(KeyboardInterrupt()))
    code, out, err = run(fake, capsys, "submit-job", "-j", str(EXAMPLE))
    assert code == 130 and out == ""
    assert one_line(err) == ("slurm-trigger: interrupted: the job may have been submitted; "
                             "`slurm-trigger list-jobs` shows it if it was")


def test_versions_reports_each_target_even_when_one_needs_aws(server: tuple[FakeSlurm, str], capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two clusters: the default one found through EC2 (no AWS region here), one with its
    URL and token. Each gets its row; the unreachable one only its error, never "served: False"."""
    fake, version = server
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("SLURM_TARGETS", json.dumps({"lab": {"SLURM_URL": fake.url, "SLURM_TOKEN": GOOD, "SLURM_USER": "alice"}}))
    code = main(["versions"])
    out, err = capsys.readouterr()
    default, lab = json.loads(out)
    assert code == 1 and err == "" and GOOD not in out
    assert default["target"] == "local" and "AWS_DEFAULT_REGION" in default["error"] and default["served"] == []
    assert lab["target"] == "lab" and lab["negotiated"] == version and "error" not in lab
    code = main(["versions", "--format", "table"])
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert code == 1 and [r for r in rows if r[0] == "local"] == [["local", "-"]]
    assert ["lab", version] in rows
