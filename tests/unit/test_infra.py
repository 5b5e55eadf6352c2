"""The deployment files agree with AWS, with each other and with the code.

cfn-lint (offline, bundled specs; with aws-sam-translator for the SAM template) checks
the templates; the rest checks what no linter knows: that every handler in app.py has
its own policy naming its own resources, that the stages carry every documented setting,
that the tables' keys are the ones the stores use, and that the merge templates still
patch resources ``chalice package`` really generates.
"""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint import api as cfnlint_api
from cfnlint.decode import decode

from slurm_trigger import idempotency, jobstore, setstore
from slurm_trigger_cli import dashboard

ROOT = Path(__file__).resolve().parents[2]
CHALICE_DIR = ROOT / ".chalice"
CONFIG = json.loads((CHALICE_DIR / "config.json").read_text())
STAGES = ("dev", "prod")
INFRA = ROOT / "infra" / "slurm-trigger-infra.yaml"
RENDER = ROOT / "scripts" / "render-policies"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
VENV_BIN = Path(sys.executable).parent

# Actions AWS cannot scope to a resource: the only ones allowed on Resource "*".
UNSCOPED_ACTIONS = {
    "ec2:DescribeInstances",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
STAGE_KEYS = (
    "autogen_policy", "xray", "lambda_memory_size", "lambda_timeout", "log_retention_in_days",
    "subnet_ids", "security_group_ids", "environment_variables", "lambda_functions",
)
SUBMITTING = ("on_object_created", "on_queue_message", "on_object_event")


def render_policies_module() -> Any:
    loader = importlib.machinery.SourceFileLoader("render_policies", str(RENDER))
    spec = importlib.util.spec_from_file_location(loader.name, RENDER, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def async_dlq_arn(stage: str) -> str:
    name = render_policies_module().async_dlq_name(CONFIG["app_name"], stage)
    return f"arn:aws:sqs:us-east-1:123456789012:{name}"


def resolve_sub(value: Any, stage: str) -> str:
    """A ``!Sub`` of the templates with the placeholders render-policies uses."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    for name, actual in {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                         "AppName": CONFIG["app_name"], "Stage": stage}.items():
        text = text.replace("${" + name + "}", actual)
    assert "${" not in text, text
    return text


def load_cfn(path: Path) -> dict[str, Any]:
    template, errors = decode(str(path))
    assert not errors, [str(e) for e in errors]
    return template


def stage_env(stage: str) -> dict[str, str]:
    return CONFIG["stages"][stage]["environment_variables"]


def policy(stage: str, function: str) -> dict[str, Any]:
    name = CONFIG["stages"][stage]["lambda_functions"][function]["iam_policy_file"]
    return json.loads((CHALICE_DIR / name).read_text())


@functools.cache
def app_functions(stage: str, subscriptions: str | None = None) -> dict[str, str]:
    """Handler name -> kind, for app.py loaded with the stage's environment (as Chalice
    does), optionally with other SUBSCRIPTIONS."""
    code = (
        "import json, app\n"
        "a = app.app\n"
        "out = {s.name: type(s).__name__ for s in a.event_sources}\n"
        "out.update({f.name: 'LambdaFunction' for f in a.pure_lambda_functions})\n"
        "out.update({'api_handler': 'RestAPI'} if a.routes else {})\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, **stage_env(stage), "AWS_DEFAULT_REGION": "us-east-1"}
    if subscriptions is not None:
        env["SUBSCRIPTIONS"] = subscriptions
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- templates


def test_infra_template_passes_cfn_lint() -> None:
    matches = cfnlint_api.lint_file(INFRA)
    assert not matches, "\n".join(str(m) for m in matches)


def test_templates_decode() -> None:
    assert load_cfn(INFRA)["Resources"]
    for merge in (ROOT / "infra").glob("chalice-merge-*.yaml"):
        assert load_cfn(merge)["Resources"], merge


def test_tables_have_the_keys_the_stores_use() -> None:
    """The CloudFormation tables are the ones the stores' own ``create_table`` makes."""

    class Recorder:
        def __init__(self) -> None:
            self.calls: dict[str, dict[str, Any]] = {}

        def create_table(self, **kw: Any) -> None:
            self.calls["create_table"] = kw

        def update_time_to_live(self, **kw: Any) -> None:
            self.calls["ttl"] = kw

        def get_waiter(self, _name: str) -> Any:
            return type("W", (), {"wait": lambda *a, **k: None})()

    resources = load_cfn(INFRA)["Resources"]
    for module, logical in ((idempotency, "IdempotencyTable"), (jobstore, "JobsTable"), (setstore, "SetsTable")):
        rec = Recorder()
        module.create_table(rec, "t")
        props = resources[logical]["Properties"]
        assert props["KeySchema"] == rec.calls["create_table"]["KeySchema"], logical
        assert props["AttributeDefinitions"] == rec.calls["create_table"]["AttributeDefinitions"], logical
        assert props["BillingMode"] == rec.calls["create_table"]["BillingMode"], logical
        assert props.get("GlobalSecondaryIndexes") == rec.calls["create_table"].get("GlobalSecondaryIndexes"), logical
        ttl = rec.calls["ttl"]["TimeToLiveSpecification"]
        assert props["TimeToLiveSpecification"] == {"AttributeName": ttl["AttributeName"], "Enabled": True}


def test_infra_names_match_every_stage() -> None:
    """Names the stack derives (<AppName>-<Stage>-...) are the ones the stages use."""
    template = load_cfn(INFRA)
    resources = template["Resources"]
    app = CONFIG["app_name"]
    for stage in STAGES:
        env = stage_env(stage)
        sub = lambda text: text.replace("${AppName}", app).replace("${Stage}", stage)  # noqa: E731
        assert sub(resources["IdempotencyTable"]["Properties"]["TableName"]["Fn::Sub"]) == env["IDEMPOTENCY_TABLE"]
        assert sub(resources["JobsTable"]["Properties"]["TableName"]["Fn::Sub"]) == env["JOBS_TABLE"]
        assert sub(resources["SetsTable"]["Properties"]["TableName"]["Fn::Sub"]) == env["SETS_TABLE"]
        assert sub(resources["InputQueue"]["Properties"]["QueueName"]["Fn::Sub"]) == env["INPUT_QUEUE"]
        assert sub(resources["EventBus"]["Properties"]["Name"]["Fn::Sub"]) == env["EVENT_BUS_NAME"]
        assert env["SLURM_TOKEN_SECRET"] == f"slurm_token_{env['SLURM_CLUSTER_NAME']}"
        assert env["SLURM_CA_PARAMETER"] == f"/{app}/{env['SLURM_CLUSTER_NAME']}/ca.pem"
        assert env["EVENT_SOURCE"] == template["Parameters"]["EventSource"]["Default"]
        assert str(env["SLURM_PORT"]) == str(template["Parameters"]["SlurmRestPort"]["Default"])


def test_queue_outlives_six_function_timeouts() -> None:
    template = load_cfn(INFRA)
    visibility = int(template["Parameters"]["QueueVisibilityTimeout"]["Default"])
    queue = template["Resources"]["InputQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["InputDeadLetterQueue", "Arn"]}
    for stage in STAGES:
        cfg = CONFIG["stages"][stage]
        fn = cfg["lambda_functions"].get("on_queue_message", {})
        assert visibility >= 6 * int(fn.get("lambda_timeout", cfg["lambda_timeout"])), stage


def test_dashboard_is_the_code_dashboard() -> None:
    """The stack embeds slurm_trigger_cli/dashboard.py's dashboard with its knobs as parameters.
    When this fails, paste the output of
    ``python -c "import json; from slurm_trigger_cli import dashboard; print(json.dumps(dashboard.build(
    '${MetricsNamespace}', '${ServiceName}', '${AWS::Region}'), indent=1))"``
    into Dashboard.DashboardBody of infra/slurm-trigger-infra.yaml."""
    template = load_cfn(INFRA)
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert json.loads(body) == dashboard.build("${MetricsNamespace}", "${ServiceName}", "${AWS::Region}")
    defaults = {k: template["Parameters"][k]["Default"] for k in ("MetricsNamespace", "ServiceName")}
    for stage in STAGES:
        env = stage_env(stage)
        assert defaults == {"MetricsNamespace": env["POWERTOOLS_METRICS_NAMESPACE"],
                            "ServiceName": env["POWERTOOLS_SERVICE_NAME"]}, stage


def test_failed_jobs_rule_is_the_documented_example() -> None:
    """The stack's rule is examples/rules/failed-jobs-of-a-pipeline.json with parameters."""
    template = load_cfn(INFRA)
    pattern = template["Resources"]["FailedJobsRule"]["Properties"]["EventPattern"]
    example = json.loads((ROOT / "examples" / "rules" / "failed-jobs-of-a-pipeline.json").read_text())
    assert pattern["source"] == [{"Ref": "EventSource"}]
    assert pattern["detail"]["source"]["pipeline"] == [{"Ref": "AlertPipeline"}]
    assert example["detail"]["source"]["pipeline"] == [template["Parameters"]["AlertPipeline"]["Default"]]
    assert pattern["detail-type"] == example["detail-type"]
    assert pattern["detail"]["state"] == example["detail"]["state"]


# --------------------------------------------------------------------------- chalice config


@pytest.mark.parametrize("stage", STAGES)
def test_stage_has_every_chalice_setting(stage: str) -> None:
    cfg = CONFIG["stages"][stage]
    missing = [k for k in STAGE_KEYS if k not in cfg]
    assert not missing, missing
    assert cfg["autogen_policy"] is False and cfg["xray"] is True
    assert cfg["subnet_ids"] and cfg["security_group_ids"]
    for name, fn in cfg["lambda_functions"].items():
        assert fn["iam_policy_file"] == f"policy-{stage}-{name}.json"
        if name in SUBMITTING:
            assert fn["reserved_concurrency"] >= 1, name
    assert all(isinstance(v, str) for v in cfg["environment_variables"].values())


def documented_variables() -> dict[str, bool]:
    """Variable -> whether docs/configuration.md says a stage sets it."""
    rows = re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|([^\n]*)$", CONFIG_DOC.read_text(), re.M)
    return {name: rest.split("|")[0].strip().lower().startswith("yes") for name, rest in rows}


def code_variables() -> set[str]:
    """Every environment variable the product reads: settings, handlers, observability."""
    names: set[str] = set()
    files = [ROOT / "app.py", *sorted((ROOT / "slurm_trigger").rglob("*.py"))]
    pattern = re.compile(r"""(?:environ\.get|getenv|environ\[|\bg)\(?\s*["']([A-Z][A-Z0-9_]{2,})["']""")
    for path in files:
        names.update(pattern.findall(path.read_text()))
    return names - {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT"}  # Lambda's own


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = sorted(code_variables() - set(documented_variables()))
    assert not missing, f"add to docs/configuration.md: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_sets_every_documented_setting(stage: str) -> None:
    env = stage_env(stage)
    documented = documented_variables()
    wanted = sorted(n for n, in_stage in documented.items() if in_stage and n not in env)
    assert not wanted, f"stage {stage} lacks {wanted}"
    undocumented = sorted(set(env) - set(documented))
    assert not undocumented, f"document {undocumented} in docs/configuration.md"


def test_deploy_walkthrough_names_every_stage_setting() -> None:
    walkthrough = (ROOT / "docs" / "deploy.md").read_text()
    names = [n for n, in_stage in documented_variables().items() if in_stage] + list(STAGE_KEYS)
    missing = sorted(n for n in names if f"`{n}" not in walkthrough)
    assert not missing, f"docs/deploy.md does not name {missing}"


# --------------------------------------------------------------------------- IAM


def test_policy_files_are_rendered_from_config() -> None:
    done = subprocess.run([sys.executable, str(RENDER), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_render_policies_for_another_account_and_region() -> None:
    docs = render_policies_module().render("prod", "111122223333", "eu-west-1", "aws")
    assert set(docs) == {f"policy-prod-{f}.json" for f in CONFIG["stages"]["prod"]["lambda_functions"]}
    for doc in docs.values():
        for st in doc["Statement"]:
            for arn in st["Resource"]:
                if arn == "*":
                    assert set(st["Action"]) <= UNSCOPED_ACTIONS
                elif not arn.startswith("arn:aws:s3:::"):
                    assert ":eu-west-1:111122223333:" in arn, arn
            if st["Action"] == ["ec2:DescribeInstances"]:
                assert st["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}


def rendered_with(tmp_path: Path, **env: str) -> dict[str, dict[str, Any]]:
    """The dev stage's policies with ``env`` added to its variables."""
    config = json.loads(json.dumps(CONFIG))
    config["stages"]["dev"]["environment_variables"].update(env)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return render_policies_module().render("dev", "111122223333", "eu-west-1", "aws", config_path=path)


def slurm_statements(docs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    doc = docs["policy-dev-poll_jobs.json"]
    return {st["Sid"]: st["Resource"] for st in doc["Statement"]
            if st["Sid"] in ("ReadSlurmToken", "FindHeadNode", "DescribePcsCluster")}


def test_minted_tokens_read_the_key_secret_not_the_token(tmp_path: Path) -> None:
    found = slurm_statements(rendered_with(tmp_path, SLURM_JWT_KEY_SECRET="slurm_jwt_key_dev-cluster"))
    assert found["ReadSlurmToken"] == ["arn:aws:secretsmanager:eu-west-1:111122223333:secret:slurm_jwt_key_dev-cluster-??????"]


def test_a_pcs_target_names_its_cluster_and_key_secret(tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:pcs!slurm-jwt-key-lab-AbCdEf"
    found = slurm_statements(rendered_with(tmp_path, SLURM_PCS_CLUSTER="pcs_4ahbm6fbzy", SLURM_JWT_KEY_SECRET=arn))
    assert found == {"ReadSlurmToken": [arn],
                     "DescribePcsCluster": ["arn:aws:pcs:eu-west-1:111122223333:cluster/pcs_4ahbm6fbzy"]}


def test_every_target_gets_its_secret_and_lookup(tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:pcs!slurm-jwt-key-lab-AbCdEf"
    targets = {"lab-pcs": {"SLURM_PCS_CLUSTER": "pcs_4ahbm6fbzy", "SLURM_JWT_KEY_SECRET": arn},
               "gpu": {"SLURM_URL": "https://10.0.9.9:8082", "SLURM_JWT_KEY_SECRET": "slurm_jwt_key_gpu"}}
    found = slurm_statements(rendered_with(tmp_path, SLURM_TARGETS=json.dumps(targets)))
    env = stage_env("dev")
    assert found["ReadSlurmToken"] == [
        f"arn:aws:secretsmanager:eu-west-1:111122223333:secret:{env['SLURM_TOKEN_SECRET']}-??????", arn,
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:slurm_jwt_key_gpu-??????"]
    assert found["DescribePcsCluster"] == ["arn:aws:pcs:eu-west-1:111122223333:cluster/pcs_4ahbm6fbzy"]
    assert "FindHeadNode" in found  # the default target is found through EC2


@pytest.mark.parametrize("env,match", [
    ({"SLURM_PCS_CLUSTER": "pcs_4ahbm6fbzy"}, "jwtKey.secretArn"),
    ({"SLURM_PCS_CLUSTER": "lab-pcs", "SLURM_JWT_KEY_SECRET": "arn:aws:secretsmanager:x"}, "--query cluster.id"),
])
def test_a_pcs_stage_must_say_what_the_policy_names(tmp_path: Path, env: dict[str, str], match: str) -> None:
    with pytest.raises(SystemExit, match=match):
        rendered_with(tmp_path, **env)


@pytest.mark.parametrize("stage", STAGES)
def test_policies_name_their_resources(stage: str) -> None:
    env = stage_env(stage)
    for function in CONFIG["stages"][stage]["lambda_functions"]:
        doc = policy(stage, function)
        assert doc["Version"] == "2012-10-17"
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert st["Effect"] == "Allow"
            assert not any("*" in a for a in actions), (function, actions)
            if "*" in resources:
                assert set(actions) <= UNSCOPED_ACTIONS, (function, st["Sid"])
            for action in actions:
                if action == "secretsmanager:GetSecretValue":
                    assert any(f":secret:{env['SLURM_TOKEN_SECRET']}-" in r for r in resources)
                    assert all(":secret:" in r and not r.endswith(":secret:*") for r in resources)
                if action.startswith("dynamodb:"):
                    tables = (env["IDEMPOTENCY_TABLE"], env["JOBS_TABLE"], env["SETS_TABLE"])
                    assert all(r.endswith(tuple(f"table/{t}" for t in tables)) or r.endswith(f"table/{env['SETS_TABLE']}/index/due")
                               for r in resources)
                if action == "events:PutEvents":
                    assert resources == [f"arn:aws:events:us-east-1:123456789012:event-bus/{env['EVENT_BUS_NAME']}"]
                if action == "sqs:SendMessage":  # only to the on-failure destination
                    assert resources == [async_dlq_arn(stage)], (function, resources)
                elif action.startswith("sqs:"):
                    assert all(r.endswith(f":{env['INPUT_QUEUE']}") for r in resources)
                if action.startswith("s3:"):
                    assert all(r.startswith(f"arn:aws:s3:::{env['INPUT_BUCKET']}") for r in resources)


def dynamodb_actions(module_path: Path) -> set[str]:
    """IAM actions for the DynamoDB calls a store makes on its client (self._db / self._ddb)."""
    text = module_path.read_text()
    calls = set(re.findall(r"self\._d+b\.([a-z_]+)\(", text)) - {"get_paginator"}
    calls |= set(re.findall(r'get_paginator\("([a-z_]+)"\)', text))
    actions = {"dynamodb:" + "".join(w.title() for w in c.split("_")) for c in calls}
    if "dynamodb:TransactWriteItems" in actions:
        # IAM has no action of that name: a transaction's Put, Update, Delete and
        # ConditionCheck are granted as PutItem, UpdateItem, DeleteItem, ConditionCheckItem
        actions.remove("dynamodb:TransactWriteItems")
        kinds = set(re.findall(r'\{"(Put|Update|Delete|ConditionCheck)":', text))
        actions |= {f"dynamodb:{k}Item" for k in kinds}
    return actions


@pytest.mark.parametrize("stage", STAGES)
def test_policies_allow_what_the_stores_call(stage: str) -> None:
    """A store that starts calling Query (say) fails here, not in AWS."""
    env = stage_env(stage)
    needs = {
        "on_queue_message": (dynamodb_actions(ROOT / "slurm_trigger" / "idempotency.py"), env["IDEMPOTENCY_TABLE"]),
        "poll_jobs": (dynamodb_actions(ROOT / "slurm_trigger" / "jobstore.py"), env["JOBS_TABLE"]),
        "check_sets": (dynamodb_actions(ROOT / "slurm_trigger" / "setstore.py"), env["SETS_TABLE"]),
    }
    for function, (actions, table) in needs.items():
        assert actions, function
        allowed = {
            a for st in policy(stage, function)["Statement"] for a in st["Action"]
            if any(r.endswith((f"table/{table}", f"table/{table}/index/due")) for r in st["Resource"])
        }
        assert actions <= allowed, (function, sorted(actions - allowed))
        assert any(a == "events:PutEvents" for st in policy(stage, function)["Statement"] for a in st["Action"])


@pytest.mark.parametrize("subscriptions", [None, "s3,sqs,eventbridge"])
@pytest.mark.parametrize("stage", STAGES)
def test_every_handler_has_its_own_policy(stage: str, subscriptions: str | None) -> None:
    """As configured, and with every subscription on (a stage may switch to any)."""
    functions = app_functions(stage, subscriptions)
    configured = CONFIG["stages"][stage]["lambda_functions"]
    missing = sorted(set(functions) - set(configured))
    assert not missing, f"add lambda_functions entries (and scripts/render-policies FUNCTIONS) for {missing}"
    for name in functions:
        assert (CHALICE_DIR / configured[name]["iam_policy_file"]).exists()


# --------------------------------------------------------------------------- chalice package

# One merge file per subscription `chalice package` can express (not "s3": Chalice refuses
# to package a notification on an existing bucket).
MERGE_FILES = {
    "sqs": ROOT / "infra" / "chalice-merge-sqs.yaml",
    "eventbridge": ROOT / "infra" / "chalice-merge-eventbridge.yaml",
}
PACKAGES = [(stage, sub) for stage in STAGES for sub in MERGE_FILES]
# The sqs stage packaged without a merge file: what `chalice deploy` sets up (both routes
# build their resources from the same app graph) and what the handler then sees.
PLAIN = [(stage, "sqs-plain") for stage in STAGES]


def test_stages_use_known_subscriptions() -> None:
    for stage in STAGES:
        subs = {s.strip() for s in stage_env(stage)["SUBSCRIPTIONS"].split(",")}
        assert subs and subs <= {"s3", *MERGE_FILES}, stage


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """``chalice package --merge-template`` per stage and subscription, offline: the copy
    of the project has an empty requirements.txt, so Chalice builds no dependencies (the
    template does not depend on them), and SUBSCRIPTIONS set to the one being packaged."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    base = tmp_path_factory.mktemp("pkg")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    for stage, sub in PACKAGES + PLAIN:
        merge = MERGE_FILES.get(sub)
        project = base / f"{stage}-{sub}"
        project.mkdir()
        for name in ("app.py", "chalicelib", "pipelines", "vendor"):  # what Chalice packages; rename: keep
            src = ROOT / name
            if src.is_dir():  # vendor's links followed, as Chalice does (vendor/ may link to any folder)
                shutil.copytree(src, project / name, symlinks=name != "vendor", ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, project / name)
        (project / ".chalice").mkdir()
        for f in CHALICE_DIR.glob("policy-*.json"):
            shutil.copy2(f, project / ".chalice" / f.name)
        config = json.loads(json.dumps(CONFIG))
        config["stages"][stage]["environment_variables"]["SUBSCRIPTIONS"] = sub.removesuffix("-plain")
        (project / ".chalice" / "config.json").write_text(json.dumps(config))
        (project / "requirements.txt").write_text("")
        target = base / f"out-{stage}-{sub}"
        merge_args = ["--merge-template", str(merge)] if merge else []
        done = subprocess.run(
            [str(VENV_BIN / "chalice"), "package", "--stage", stage, *merge_args, str(target)],
            cwd=project, env=env, capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stderr
        sam = next(target.glob("sam.*"))
        out[(stage, sub)] = {"path": sam, "template": load_cfn(sam)}
    return out


@pytest.mark.parametrize("stage,sub", PACKAGES)
def test_merge_patches_resources_chalice_generates(packaged: dict[Any, Any], stage: str, sub: str) -> None:
    """Every patched resource and event is one Chalice generated: a merge into a missing
    resource would leave a half resource without Type."""
    resources = packaged[(stage, sub)]["template"]["Resources"]
    for logical, patch in load_cfn(MERGE_FILES[sub])["Resources"].items():
        assert resources[logical].get("Type") == "AWS::Serverless::Function", logical
        for event in patch["Properties"].get("Events", {}):
            props = resources[logical]["Properties"]["Events"][event]["Properties"]
            assert "Queue" in props or "Pattern" in props, event
    assert all("Type" in r for r in resources.values())


def sqs_function(packaged: dict[Any, Any], stage: str, sub: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the function's properties, its SQS event's properties) in one package."""
    resources = packaged[(stage, sub)]["template"]["Resources"]
    found = [
        (res["Properties"], ev["Properties"]) for res in resources.values() if res["Type"] == "AWS::Serverless::Function"
        for ev in res["Properties"].get("Events", {}).values() if ev["Type"] == "SQS"
    ]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("stage", STAGES)
def test_sqs_mapping_reports_batch_item_failures(packaged: dict[Any, Any], stage: str) -> None:
    """Route B: the mapping reports item failures and the handler is told so, together."""
    fn, props = sqs_function(packaged, stage, "sqs")
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert fn["Environment"]["Variables"]["SQS_REPORT_BATCH_ITEM_FAILURES"] == "true"
    assert fn["Environment"]["Variables"].items() >= stage_env(stage).items()  # merged, not replaced
    assert props["Queue"]["Fn::Sub"].endswith(":" + stage_env(stage)["INPUT_QUEUE"])
    assert resolve_sub(fn["FunctionName"], stage) == f"{CONFIG['app_name']}-{stage}-on_queue_message"


@pytest.mark.parametrize("stage", STAGES)
def test_sqs_mapping_without_merge_fails_closed(packaged: dict[Any, Any], stage: str) -> None:
    """Route A's mapping cannot report item failures, and its handler is not told it can:
    it raises on a partial batch (tests/integration/test_routes.py)."""
    fn, props = sqs_function(packaged, stage, "sqs-plain")
    assert "FunctionResponseTypes" not in props
    assert "SQS_REPORT_BATCH_ITEM_FAILURES" not in fn["Environment"]["Variables"]
    assert "SQS_REPORT_BATCH_ITEM_FAILURES" not in stage_env(stage)


@pytest.mark.parametrize("sub", ["sqs", "sqs-plain"])
@pytest.mark.parametrize("stage", STAGES)
def test_sqs_concurrency_is_chalices_own(packaged: dict[Any, Any], stage: str, sub: str) -> None:
    """maximum_concurrency from app.py on both routes (no merge patch), within the
    function's reserved concurrency."""
    _, props = sqs_function(packaged, stage, sub)
    reserved = CONFIG["stages"][stage]["lambda_functions"]["on_queue_message"]["reserved_concurrency"]
    assert props["ScalingConfig"]["MaximumConcurrency"] == int(stage_env(stage)["SQS_MAXIMUM_CONCURRENCY"])
    assert 2 <= props["ScalingConfig"]["MaximumConcurrency"] <= reserved
    assert "ScalingConfig" not in json.dumps(load_cfn(MERGE_FILES["sqs"]))


@pytest.mark.parametrize("sub", ["sqs", "sqs-plain"])
@pytest.mark.parametrize("stage", STAGES)
def test_sqs_batch_is_the_stages(packaged: dict[Any, Any], stage: str, sub: str) -> None:
    """The mapping's batch size and window are app.py's (10 and none unless a stage says)."""
    _, props = sqs_function(packaged, stage, sub)
    assert props["BatchSize"] == int(stage_env(stage).get("SQS_BATCH_SIZE") or 10)
    assert props.get("MaximumBatchingWindowInSeconds", 0) == int(stage_env(stage).get("SQS_BATCHING_WINDOW_SECONDS") or 0)


def sqs_batching(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import app\ns, = [s for s in app.app.event_sources if s.name == 'on_queue_message']\nprint(s.batch_size, s.maximum_batching_window_in_seconds)"
    env = {**os.environ, **stage_env("dev"), "AWS_DEFAULT_REGION": "us-east-1", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_sqs_batch_of_100_needs_a_window() -> None:
    """Bursts may take 100 messages a batch (a transaction's limit), with the window AWS
    requires past 10; without it app.py refuses at import, before a deploy fails."""
    assert sqs_batching({"SQS_BATCH_SIZE": "100", "SQS_BATCHING_WINDOW_SECONDS": "1"}).stdout.split() == ["100", "1"]
    for bad in ({"SQS_BATCH_SIZE": "100"}, {"SQS_BATCH_SIZE": "101", "SQS_BATCHING_WINDOW_SECONDS": "1"}):
        done = sqs_batching(bad)
        assert done.returncode != 0 and "SQS_BATCH_SIZE" in done.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_object_events_rule_has_retries_and_dead_letters(packaged: dict[Any, Any], stage: str) -> None:
    """Route B: Lambda's retries end in the on-failure destination, EventBridge's in the
    rule's DLQ; both are the async DLQ the role may send to."""
    fn = packaged[(stage, "eventbridge")]["template"]["Resources"]["OnObjectEvent"]["Properties"]
    (event,) = fn["Events"].values()
    assert event["Type"] == "EventBridgeRule"
    assert event["Properties"]["Pattern"]["detail"]["bucket"]["name"] == [stage_env(stage)["INPUT_BUCKET"]]
    assert resolve_sub(event["Properties"]["DeadLetterConfig"]["Arn"], stage) == async_dlq_arn(stage)
    retry = event["Properties"]["RetryPolicy"]
    assert 0 < retry["MaximumRetryAttempts"] <= 185 and 60 <= retry["MaximumEventAgeInSeconds"] <= 86400
    invoke = fn["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] <= 2 and 60 <= invoke["MaximumEventAgeInSeconds"] <= 21600
    assert invoke["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    assert resolve_sub(invoke["DestinationConfig"]["OnFailure"]["Destination"], stage) == async_dlq_arn(stage)
    assert resolve_sub(fn["FunctionName"], stage) == f"{CONFIG['app_name']}-{stage}-on_object_event"


def test_deploy_route_on_failure_template() -> None:
    """Route A: the companion stack gives both async functions the same destination."""
    path = ROOT / "infra" / "chalice-deploy-on-failure.yaml"
    matches = cfnlint_api.lint_file(path)
    assert not matches, "\n".join(str(m) for m in matches)
    resources = load_cfn(path)["Resources"]
    assert {r["Type"] for r in resources.values()} == {"AWS::Lambda::EventInvokeConfig"}
    names = set()
    for stage in STAGES:
        for res in resources.values():
            props = res["Properties"]
            assert resolve_sub(props["DestinationConfig"]["OnFailure"]["Destination"], stage) == async_dlq_arn(stage)
            assert props["Qualifier"] == "$LATEST"
            names.add(resolve_sub(props["FunctionName"], stage).removeprefix(f"{CONFIG['app_name']}-{stage}-"))
    assert names == {"on_object_created", "on_object_event"}


def test_async_dlq_is_the_one_the_policies_name() -> None:
    resources = load_cfn(INFRA)["Resources"]
    queue = resources["AsyncDeadLetterQueue"]["Properties"]["QueueName"]
    (statement,) = resources["AsyncDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    for stage in STAGES:
        assert f"arn:aws:sqs:us-east-1:123456789012:{resolve_sub(queue, stage)}" == async_dlq_arn(stage)
        for function in ("on_object_created", "on_object_event"):
            granted = [st["Resource"] for st in policy(stage, function)["Statement"] if "sqs:SendMessage" in st["Action"]]
            assert granted == [[async_dlq_arn(stage)]], function


@pytest.mark.parametrize("stage,sub", PACKAGES + PLAIN)
def test_packaged_template_passes_cfn_lint(packaged: dict[Any, Any], stage: str, sub: str) -> None:
    """cfn-lint runs the SAM transform (aws-sam-translator) and checks the result."""
    matches = cfnlint_api.lint_file(packaged[(stage, sub)]["path"])
    assert not matches, "\n".join(str(m) for m in matches)


@pytest.mark.parametrize("stage,sub", PACKAGES)
def test_packaged_functions_follow_the_stage(packaged: dict[Any, Any], stage: str, sub: str) -> None:
    """Settings Chalice turns into properties: VPC, tracing, concurrency, policy files."""
    cfg = CONFIG["stages"][stage]
    resources = packaged[(stage, sub)]["template"]["Resources"]
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions
    for logical, res in functions.items():
        props = res["Properties"]
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", logical).lower()
        assert props["Tracing"] == "Active"
        assert props["VpcConfig"] == {"SecurityGroupIds": cfg["security_group_ids"], "SubnetIds": cfg["subnet_ids"]}
        assert props["ReservedConcurrentExecutions"] == cfg["lambda_functions"][name]["reserved_concurrency"]
        assert props["MemorySize"] == cfg["lambda_functions"][name].get("lambda_memory_size", cfg["lambda_memory_size"])
        role = resources[props["Role"]["Fn::GetAtt"][0]]["Properties"]["Policies"][0]["PolicyDocument"]
        assert role == policy(stage, name)


def test_head_node_policy_is_the_kits() -> None:
    """The stack's head node policy is headnode/iam-policy.json, statement for statement:
    the one secret, the one parameter and the one bus, by name."""
    kit = json.loads((ROOT / "headnode" / "iam-policy.json").read_text())
    stack = load_cfn(INFRA)["Resources"]["HeadNodeWriterPolicy"]["Properties"]["PolicyDocument"]
    names = {"${Partition}": "${AWS::Partition}", "${Region}": "${AWS::Region}", "${AccountId}": "${AWS::AccountId}",
             "${EventBusName}": "${AppName}-${Stage}"}

    def as_stack(resource: str) -> dict[str, str]:
        for mine, theirs in names.items():
            resource = resource.replace(mine, theirs)
        return {"Fn::Sub": resource}

    assert [s["Sid"] for s in stack["Statement"]] == [s["Sid"] for s in kit["Statement"]]
    for theirs, mine in zip(stack["Statement"], kit["Statement"]):
        assert theirs["Effect"] == mine["Effect"] == "Allow"
        assert theirs["Action"] == mine["Action"], mine["Sid"]
        assert theirs["Resource"] == as_stack(mine["Resource"]), mine["Sid"]
        assert "*" not in mine["Resource"].split(":")[-1], mine["Sid"]  # named, not every secret
