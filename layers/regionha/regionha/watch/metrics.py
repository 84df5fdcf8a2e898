"""Publishing datapoints: EMF log lines in Lambda, PutMetricData where nothing reads those logs.

In AWS, CloudWatch Logs turns a Lambda's EMF lines into metrics for free and without an API call,
so that is the default. The local runtime has no such pipeline: with ``REGIONHA_METRICS_SINK=cloudwatch``
the same datapoints go to ``cloudwatch.put_metric_data`` instead, so that its alarm evaluator sees
them. Either way a datapoint carries exactly its own dimensions (no Powertools ``service``
dimension), so one alarm definition matches both sinks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import single_metric

from regionha import environment
from regionha.errors import ConfigurationError

NAMESPACE = "regionha"
SINK_ENV = "REGIONHA_METRICS_SINK"
SINKS = ("emf", "cloudwatch")
# PutMetricData takes at most 1000 datapoints per call; stay far below.
_PUT_BATCH = 500


def sleep(seconds: float) -> None:
    """Wait ``seconds`` of the same clock: real seconds on AWS, emulated ones in the local runtime (its
    ``REGIONHA_CLOCK``, see :mod:`regionha.environment`), so that waits between checks line up with the
    alarm periods and schedules they are measured against."""
    environment.current().sleep(seconds)


def now() -> datetime:
    """The time datapoints are stamped with: the invocation's clock (the local runtime's emulated one
    when it set ``REGIONHA_CLOCK``), else the real time.

    Durations measured from an event's own time (stamped by the same clock) use it too, so they stay
    in one time domain under a compressed emulated clock.
    """
    return environment.current().now()


class DatapointLike(Protocol):
    name: str
    value: float
    unit: str
    dimensions: dict[str, str]


@dataclass(frozen=True)
class Datapoint:
    name: str
    value: float
    unit: str = "Count"
    dimensions: dict[str, str] = field(default_factory=dict)


def sink() -> str:
    """The configured sink: ``emf`` (default) or ``cloudwatch``; anything else is a configuration error."""
    value = (os.environ.get(SINK_ENV) or "emf").strip().lower()
    if value not in SINKS:
        raise ConfigurationError(f"{SINK_ENV}={value!r}: expected one of {', '.join(SINKS)}")
    return value


def emit(
    datapoints: Iterable[DatapointLike],
    *,
    namespace: str = NAMESPACE,
    cloudwatch: Any = None,
    region: str | None = None,
    timestamp: datetime | None = None,
) -> int:
    """Publish ``datapoints`` through the configured sink; returns how many were published.

    ``cloudwatch`` is the client used by the PutMetricData sink; without one, a client for ``region``
    (default: the Lambda's own region) is made from boto3's default session, which honours
    ``AWS_ENDPOINT_URL``. ``timestamp`` stamps PutMetricData datapoints (the local runtime passes its
    emulated time); EMF lines are always stamped now.

    IAM: cloudwatch:PutMetricData, only with the ``cloudwatch`` sink.
    """
    points = list(datapoints)
    if not points:
        return 0
    if sink() == "cloudwatch":
        if timestamp is None and environment.current().clock is not None:
            timestamp = now()
        return _put_metric_data(points, namespace, cloudwatch, region, timestamp)
    for p in points:
        with single_metric(name=p.name, unit=p.unit, value=p.value, namespace=namespace) as metric:
            # Powertools adds a "service" dimension from POWERTOOLS_SERVICE_NAME; the alarms match on
            # exactly the datapoint's own dimensions, as PutMetricData publishes them.
            metric.service = None
            for key, value in p.dimensions.items():
                metric.add_dimension(name=key, value=value)
    return len(points)


def _put_metric_data(
    points: list[DatapointLike],
    namespace: str,
    cloudwatch: Any,
    region: str | None,
    timestamp: datetime | None,
) -> int:
    if cloudwatch is None:
        from regionha.aws import Clients, stack_region

        region = region or stack_region()
        cloudwatch = Clients().client("cloudwatch", region)
    data = [
        {
            "MetricName": p.name,
            "Value": float(p.value),
            "Unit": p.unit,
            "Dimensions": [{"Name": k, "Value": v} for k, v in p.dimensions.items()],
            **({"Timestamp": timestamp} if timestamp is not None else {}),
        }
        for p in points
    ]
    for i in range(0, len(data), _PUT_BATCH):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[i : i + _PUT_BATCH])
    return len(data)
