"""One Logger, Metrics and Tracer for the whole app (Powertools).

Handlers in ``app.py`` wrap themselves with these; library modules only log and
add metrics. The logger never sees a token: nothing in slurm-trigger passes one to it.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar

from aws_lambda_powertools import Logger, Metrics

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "slurm-trigger")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "SlurmTrigger"), service=SERVICE)

F = TypeVar("F", bound=Callable[..., Any])


class LazyTracer:
    """Powertools' ``Tracer``, built when a traced method first runs.

    Building a ``Tracer`` imports the X-Ray SDK (about a quarter of a cold start's
    imports); a container that never reaches a traced method should not pay for it,
    and one that does pays it once, on the first event. Powertools has no lazy mode.
    """

    def __init__(self, service: str) -> None:
        self._service = service
        self._tracer: Any = None

    @property
    def tracer(self) -> Any:
        if self._tracer is None:
            from aws_lambda_powertools import Tracer

            self._tracer = Tracer(service=self._service)
        return self._tracer

    def capture_method(self, method: F) -> F:
        """Like ``Tracer.capture_method``; the real decorator is applied on first call."""
        traced: list[Callable[..., Any]] = []

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not traced:
                traced.append(self.tracer.capture_method(method))
            return traced[0](*args, **kwargs)

        return wrapper  # type: ignore[return-value]


tracer = LazyTracer(SERVICE)
