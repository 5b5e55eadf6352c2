"""The CloudWatch dashboard of slurm-trigger, built from code so it never drifts from
the metric names the trigger and the tracker emit. ``dashboards/slurm-trigger.json``
is ``render()`` with the defaults (a test keeps them identical); ``slurm-trigger
dashboard put`` builds it for the target region and puts it.
"""
from __future__ import annotations

import json
from typing import Any

DEFAULT_NAME = "slurm-trigger"
DEFAULT_REGION = "us-east-1"

TRIGGER_METRICS = ("JobsSubmitted", "SubmissionFailures", "DuplicateObjectsSkipped", "UnmatchedObjects")
TRACKER_METRICS = ("JobStateTransitions", "JobsPending", "JobsRunning", "PollDuration", "JobsSeenPerPoll", "PollsSkipped",
                   "VanishedJobsToLookUp")

WIDTH, HEIGHT = 12, 6


def build(namespace: str = "SlurmTrigger", service: str = "slurm-trigger", region: str = DEFAULT_REGION) -> dict[str, Any]:
    """The dashboard body (CloudWatch dashboard body structure)."""

    def metric(name: str, stat: str, label: str | None = None) -> list[Any]:
        return [namespace, name, "service", service, {"stat": stat, "label": label or name}]

    def graph(title: str, metrics: list[Any], *, period: int = 300, stacked: bool = False, unit: str | None = None) -> dict[str, Any]:
        props: dict[str, Any] = {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": stacked,
            "period": period,
            "metrics": metrics,
        }
        if unit:
            props["yAxis"] = {"left": {"label": unit, "showUnits": False, "min": 0}}
        return {"type": "metric", "properties": props}

    transitions = (
        f"SEARCH('{{{namespace},State,service}} MetricName=\"JobStateTransitions\" service=\"{service}\"', 'Sum', 300)"
    )
    widgets = [
        {
            "type": "text",
            "properties": {
                "markdown": (
                    f"## slurm-trigger ({service})\n"
                    "S3 objects become Slurm jobs (left); the tracker polls Slurm and publishes every job "
                    "state change to EventBridge (right). Namespace `" + namespace + "`."
                )
            },
            "height": 2,
        },
        graph(
            "Trigger: objects and submissions",
            [metric(m, "Sum") for m in TRIGGER_METRICS],
            unit="count / 5 min",
        ),
        graph(
            "Job state transitions by state",
            [[{"expression": transitions, "id": "transitions", "label": "", "period": 300}]],
            stacked=True,
            unit="count / 5 min",
        ),
        graph(
            "Tracked jobs pending and running",
            [metric("JobsPending", "Maximum", "pending"), metric("JobsRunning", "Maximum", "running")],
            period=60,
            unit="jobs",
        ),
        graph(
            "Poll duration",
            [metric("PollDuration", "Average", "average"), metric("PollDuration", "Maximum", "maximum")],
            period=60,
            unit="ms",
        ),
        graph(
            "Jobs seen per poll, vanished jobs to look up, overlapping polls skipped",
            [metric("JobsSeenPerPoll", "Maximum", "jobs seen"), metric("VanishedJobsToLookUp", "Maximum", "to look up"),
             metric("PollsSkipped", "Sum", "polls skipped")],
            period=60,
        ),
        {
            "type": "metric",
            "properties": {
                "title": "Totals over the time range",
                "region": region,
                "view": "singleValue",
                "setPeriodToTimeRange": True,
                "period": 300,
                "metrics": [metric(m, "Sum") for m in TRIGGER_METRICS],
            },
        },
    ]
    x = y = 0
    for widget in widgets:
        width = 24 if widget["type"] == "text" else WIDTH
        height = widget.pop("height", HEIGHT)
        if x + width > 24:
            x, y = 0, y + HEIGHT
        widget.update({"x": x, "y": y, "width": width, "height": height})
        x += width
        if x >= 24:
            x, y = 0, y + height
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


def render(body: dict[str, Any] | None = None) -> str:
    """The JSON text as committed in ``dashboards/slurm-trigger.json``."""
    return json.dumps(body if body is not None else build(), indent=2) + "\n"


def put(cloudwatch_client: Any, name: str = DEFAULT_NAME, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Create or replace the dashboard; returns CloudWatch's validation messages."""
    answer = cloudwatch_client.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body or build()))
    return answer.get("DashboardValidationMessages", [])
