"""The ``slurm-trigger`` command line.

Each area of the product registers its own subcommands from one module
(``slurm_commands``, ``trigger_commands``, ``redrive_commands``, ``tracker_commands``);
this module only holds what they share: the cluster options, the output format and
error reporting.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import sys
import traceback
from typing import Any, Callable, Iterator, Sequence

from slurm_trigger.settings import Settings
from slurm_trigger.slurm.errors import SlurmError

COMMAND_MODULES = ("slurm_commands", "trigger_commands", "redrive_commands", "tracker_commands", "examples_commands")


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes; flags win over environment variables."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("cluster")
    g.add_argument("-t", "--target", help="one of the deployment's clusters by name (env SLURM_TARGETS); default: the default one, SLURM_CLUSTER_NAME")
    g.add_argument("-n", "--cluster-name", help="ParallelCluster name (env SLURM_CLUSTER_NAME)")
    g.add_argument("-u", "--cluster-user", help="Slurm user, X-SLURM-USER-NAME (env SLURM_USER)")
    g.add_argument("--url", help="slurmrestd base URL, e.g. https://10.0.0.5:8082 (env SLURM_URL); default: find the head node through EC2")
    g.add_argument("--token", help="JWT to use instead of the Secrets Manager secret (env SLURM_TOKEN, which other users cannot see in ps; this option they can)")
    g.add_argument("--token-secret", help="Secrets Manager id of the token (env SLURM_TOKEN_SECRET; default slurm_token_<cluster>)")
    g.add_argument("--pcs-cluster", help="an AWS PCS cluster (id or name): endpoint and signing key from GetCluster, Bearer tokens minted here (env SLURM_PCS_CLUSTER; needs SLURM_UID/SLURM_GID)")
    g.add_argument("--jwt-key-file", help="mint tokens from this HS256 key file, e.g. a copy of jwt_hs256.key (env SLURM_JWT_KEY_FILE)")
    g.add_argument("--jwt-key-secret", help="mint tokens from the key in this Secrets Manager secret (env SLURM_JWT_KEY_SECRET)")
    g.add_argument("--auth-header", choices=("x-slurm", "bearer"), help="send the token as X-SLURM-USER-TOKEN (default) or Authorization: Bearer (env SLURM_AUTH_HEADER)")
    g.add_argument("--api-version", help="pin the REST version, e.g. v0.0.40 (env SLURM_API_VERSION); default: newest both sides know")
    g.add_argument("--ca-bundle", help="PEM file that signs or is the head node's certificate (env SLURM_CA_BUNDLE)")
    g.add_argument("--public-ip", action="store_true", default=None, help="use the head node's public IP (env SLURM_USE_PUBLIC_IP)")
    g.add_argument("--insecure", action="store_true", default=None, help="do not verify TLS (logs a warning; env SLURM_INSECURE)")
    p.add_argument("--format", choices=("json", "table"), default="json", help="output format (default: json)")
    return p


_FLAG_TO_SETTING = {
    "cluster_name": "cluster_name",
    "cluster_user": "slurm_user",
    "url": "slurm_url",
    "token": "token",
    "token_secret": "token_secret",
    "pcs_cluster": "pcs_cluster",
    "jwt_key_file": "jwt_key_file",
    "jwt_key_secret": "jwt_key_secret",
    "auth_header": "auth_header",
    "api_version": "api_version",
    "ca_bundle": "ca_bundle",
    "public_ip": "use_public_ip",
    "insecure": "insecure",
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment first (the target ``--target`` names), then any flag the user gave."""
    overrides = {
        setting: getattr(args, flag)
        for flag, setting in _FLAG_TO_SETTING.items()
        if getattr(args, flag, None) is not None
    }
    return dataclasses.replace(Settings.from_env().target(getattr(args, "target", None)), **overrides)


def emit(data: Any, fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print JSON, or a plain table of ``columns`` for a list of dicts."""
    if fmt == "table" and columns is not None:
        rows = data if isinstance(data, list) else [data]
        cells = [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    else:
        json.dump(data, sys.stdout, indent=2, default=str)
        print()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slurm-trigger",
        description="Submit and follow Slurm jobs on an AWS ParallelCluster head node through slurmrestd.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"slurm_trigger_cli.{name}")
        # A fresh parent per module: argparse shares the parent's actions, so one
        # module's set_defaults(format=...) would otherwise change every command's default.
        module.register(sub, common_options())
    return parser


def command_first(argv: Sequence[str]) -> list[str]:
    """``slurm-trigger -n c -u ec2-user submit-job -j f`` (the seed ``slurmapi.py``'s order)
    as ``submit-job -n c -u ec2-user -j f``: the shared options may stand before the
    command too. argparse alone cannot do this: a subcommand's defaults overwrite what
    the main parser read before it."""
    takes_value = {
        flag
        for action in common_options()._actions
        if action.nargs is None and not isinstance(action, argparse._StoreConstAction) and action.option_strings
        for flag in action.option_strings
    }
    argv = list(argv)
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return [word, *argv[:i], *argv[i + 1 :]] if i else argv
        if word == "--":
            break
        i += 2 if word in takes_value else 1
    return argv


# What a JSON log line has that a person at a terminal does not need to read.
_LAMBDA_KEYS = frozenset({"level", "location", "message", "timestamp", "service", "sampling_rate", "xray_trace_id",
                          "exception", "exception_name", "exception_notes", "stack_trace"})


def _human_line(log: dict[str, Any]) -> str:
    """One of the Logger's records as a line: ``slurm-trigger: warning: message
    (cluster=..., error=...)``, then the traceback if the record has one."""
    keys = ", ".join(f"{k}={v}" for k, v in log.items() if k not in _LAMBDA_KEYS)
    line = f"slurm-trigger: {str(log.get('level', '')).lower()}: {log.get('message')}" + (f" ({keys})" if keys else "")
    return line + (f"\n{log['exception']}" if log.get("exception") else "")


@contextlib.contextmanager
def human_logs() -> Iterator[None]:
    """While a command runs, the project's one Logger (Powertools) writes plain lines
    to stderr, warnings and up unless ``POWERTOOLS_LOG_LEVEL`` asks for more: stdout
    holds only the command's output, which scripts parse. Its JSON lines are for
    CloudWatch; they come back when the command returns (main() runs in-process too)."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    from slurm_trigger.observability import logger

    handler = logger.registered_handler
    saved = handler.stream, handler.formatter, logger.log_level
    handler.setStream(sys.stderr)
    handler.setFormatter(LambdaPowertoolsFormatter(json_serializer=_human_line, serialize_stacktrace=False))
    logger.setLevel((os.environ.get("POWERTOOLS_LOG_LEVEL") or "WARNING").upper())
    try:
        yield
    finally:
        handler.setStream(saved[0])
        handler.setFormatter(saved[1])
        logger.setLevel(saved[2])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Whatever goes wrong ends as one line on stderr and an exit code
    (1: Slurm or AWS failed, 2: bad input or settings, 130: Ctrl-C), never a traceback
    (``POWERTOOLS_LOG_LEVEL=DEBUG`` adds it) and never the token."""
    args = build_parser().parse_args(command_first(sys.argv[1:] if argv is None else argv))
    handler: Callable[[argparse.Namespace], int | None] = args.handler
    try:
        with human_logs():
            code = handler(args) or 0
            sys.stdout.flush()  # here, where a reader that went away can still be caught
            return code
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:
        submitting = args.command == "submit-job" and not args.print_body
        return _fail(args, "interrupted" + (": the job may have been submitted; `slurm-trigger list-jobs` "
                                            "shows it if it was" if submitting else ""), 130)
    except SlurmError as exc:
        return _fail(args, f"{type(exc).__name__}: {exc}", 1)
    except (ValueError, OSError) as exc:
        return _fail(args, str(exc), 2)
    except Exception as exc:  # botocore's, and anything unforeseen: still one line
        slurm_only = args.handler.__module__.endswith(".slurm_commands") or args.command == "render"
        return _fail(args, *(aws_problem(exc, slurm_only) or (f"unexpected {type(exc).__name__}: {exc}", 1)))


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    """``slurm-trigger: message`` on one line (after the traceback at DEBUG), any token
    the user gave redacted: an exception's text is not ours to trust."""
    if (os.environ.get("POWERTOOLS_LOG_LEVEL") or "").upper() == "DEBUG":
        message = traceback.format_exc() + message
    else:
        message = " ".join(message.split())
    for token in (getattr(args, "token", None), os.environ.get("SLURM_TOKEN")):
        if token and len(token) >= 8:
            message = message.replace(token, "[REDACTED]")
    with contextlib.suppress(OSError):
        print(f"slurm-trigger: {message}", file=sys.stderr)
    return code


def _stdout_gone() -> int:
    """The reader of stdout left (``| head``, ``| jq`` that failed): stop quietly, as
    ``cat`` does, with SIGPIPE's exit status. Python's flush at exit would fail again
    and print "Exception ignored": point stdout at /dev/null first."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + int(signal.SIGPIPE)


def aws_problem(exc: Exception, slurm_only: bool) -> tuple[str, int] | None:
    """What to tell the user when an AWS call failed, and the exit code; None when ``exc``
    is not botocore's. ``slurm_only``: the command calls AWS only to find the head node
    and its token (the Slurm commands, render), which --url and --token replace."""
    from botocore import exceptions as aws

    no_aws = "or give --url and --token (SLURM_URL, SLURM_TOKEN) to need no AWS call" if slurm_only else "for this command"
    if isinstance(exc, aws.NoRegionError):
        return f"no AWS region: set AWS_DEFAULT_REGION (or a profile's region) {no_aws}", 2
    if isinstance(exc, (aws.NoCredentialsError, aws.PartialCredentialsError)):
        return f"no AWS credentials ({exc}): configure them (aws configure, AWS_PROFILE) {no_aws}", 2
    if isinstance(exc, aws.ClientError):
        error = exc.response.get("Error", {})
        return f"AWS {exc.operation_name} failed: {error.get('Code')}: {error.get('Message')}", 1
    if isinstance(exc, aws.BotoCoreError):
        return f"AWS call failed: {exc}", 1
    return None
