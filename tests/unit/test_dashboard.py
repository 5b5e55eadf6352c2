"""The dashboard: the committed JSON is the builder's output, every metric is on it,
and ``slurm-trigger dashboard put`` puts it (moto)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3

from slurm_trigger_cli import dashboard
from slurm_trigger_cli import common_options, tracker_commands

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "dashboards" / "slurm-trigger.json"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    tracker_commands.register(parser.add_subparsers(dest="command", required=True), common_options())
    args = parser.parse_args(argv)
    return args.handler(args)


def metric_names(body: dict) -> set[str]:
    names = set()
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], str):
                names.add(row[1])
            else:
                names.update(m for m in dashboard.TRACKER_METRICS if f'"{m}"' in row[0]["expression"])
    return names


def test_committed_json_is_the_builders_output() -> None:
    assert COMMITTED.read_text() == dashboard.render(), "regenerate: slurm-trigger dashboard show > dashboards/slurm-trigger.json"


def test_every_metric_of_the_trigger_and_tracker_is_shown() -> None:
    assert metric_names(dashboard.build()) == set(dashboard.TRIGGER_METRICS) | set(dashboard.TRACKER_METRICS)


def test_widgets_fit_the_24_column_grid_without_overlap() -> None:
    cells = set()
    for w in dashboard.build()["widgets"]:
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells
                cells.add((x, y))


def test_region_and_namespace_are_parameters() -> None:
    body = dashboard.build(namespace="Other", region="eu-west-1")
    metrics = [w["properties"] for w in body["widgets"] if w["type"] == "metric"]
    assert {p["region"] for p in metrics} == {"eu-west-1"}
    assert "{Other,State,service}" in json.dumps(body)


def test_cli_puts_the_dashboard(aws, capsys) -> None:
    assert run_cli(["dashboard", "put", "--name", "st-test"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dashboard"] == "st-test" and out["region"] == "us-east-1"
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    body = json.loads(cloudwatch.get_dashboard(DashboardName="st-test")["DashboardBody"])
    assert body == dashboard.build()


def test_cli_show_prints_the_committed_file(capsys) -> None:
    assert run_cli(["dashboard", "show"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text()
