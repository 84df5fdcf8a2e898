"""The one metrics publisher: every datapoint regionha publishes (canary, failover, drill, audit) goes
through here, as a ``Datapoint`` in the one namespace ``regionha``.

Two transports, one datapoint shape:

- **EMF** (the default, every Lambda): CloudWatch Logs turns a function's Embedded Metric Format log
  lines into metrics, for free and without an API call, so it also works for the canary inside the
  client VPC, which reaches no AWS API. A datapoint's ``timestamp`` becomes the EMF ``Timestamp`` and
  its ``resolution`` the EMF ``StorageResolution`` (1 = high resolution, what 10-second alarms need).
- **PutMetricData** (``put_metric_data``): hosts whose logs nobody reads (``regionha canary run
  --publish``, an on-prem agent), and ``REGIONHA_METRICS_SINK=cloudwatch``.

Either way a datapoint carries exactly its own dimensions (no Powertools ``service`` dimension), so
one alarm definition matches both. IAM: cloudwatch:PutMetricData only for the PutMetricData transport
(condition ``cloudwatch:namespace = regionha``); EMF needs only the function's log permissions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


# StorageResolution: 1 keeps one-second datapoints (alarm periods of 10 s); 60 the standard minute.
HIGH_RESOLUTION = 1
STANDARD_RESOLUTION = 60


@dataclass(frozen=True)
class Datapoint:
    """One value of one metric: ``unit`` a CloudWatch unit, ``dimensions`` exactly those the alarms
    match, ``resolution`` the StorageResolution in seconds (1 or 60)."""

    name: str
    value: float
    unit: str = "Count"
    dimensions: dict[str, str] = field(default_factory=dict)
    resolution: int = STANDARD_RESOLUTION


def sink() -> str:
    """The configured sink: ``emf`` (default) or ``cloudwatch``; anything else is a configuration error."""
    value = (os.environ.get(SINK_ENV) or "emf").strip().lower()
    if value not in SINKS:
        raise ConfigurationError(f"{SINK_ENV}={value!r}: expected one of {', '.join(SINKS)}")
    return value


def emit(
    datapoints: Iterable[Datapoint],
    *,
    namespace: str = NAMESPACE,
    cloudwatch: Any = None,
    region: str | None = None,
    timestamp: datetime | None = None,
) -> int:
    """Publish ``datapoints`` through the configured sink; returns how many were published.

    ``cloudwatch`` is the client used by the PutMetricData sink; without one, a client for ``region``
    (default: the Lambda's own region) is made from boto3's default session, which honours
    ``AWS_ENDPOINT_URL``. ``timestamp`` stamps the datapoints on both transports (EMF ``Timestamp``;
    a canary round passes its own slot time); None: PutMetricData stamps ``now()``, EMF the real time.

    IAM: cloudwatch:PutMetricData, only with the ``cloudwatch`` sink.
    """
    points = list(datapoints)
    if not points:
        return 0
    if sink() == "cloudwatch":
        if timestamp is None and environment.current().clock is not None:
            timestamp = now()
        return _put_metric_data(points, namespace, cloudwatch, region, timestamp)
    # Imported here: Powertools loads botocore, which the pure modules that name metrics must not.
    from aws_lambda_powertools.metrics import single_metric

    for p in points:
        with single_metric(name=p.name, unit=p.unit, value=p.value, namespace=namespace,
                           resolution=p.resolution) as metric:
            # Powertools adds a "service" dimension from POWERTOOLS_SERVICE_NAME; the alarms match on
            # exactly the datapoint's own dimensions, as PutMetricData publishes them.
            metric.service = None
            if timestamp is not None:
                metric.set_timestamp(timestamp)
            for key, value in p.dimensions.items():
                metric.add_dimension(name=key, value=value)
    return len(points)


def put_metric_data(
    points: Iterable[Datapoint],
    cloudwatch: Any = None,
    *,
    namespace: str = NAMESPACE,
    region: str | None = None,
    timestamp: datetime | None = None,
) -> int:
    """PutMetricData for hosts outside Lambda (``regionha canary run --publish``, an on-prem agent);
    batches of at most 500 datapoints; returns how many were put. IAM: cloudwatch:PutMetricData."""
    return _put_metric_data(list(points), namespace, cloudwatch, region, timestamp)


def _put_metric_data(
    points: list[Datapoint],
    namespace: str,
    cloudwatch: Any,
    region: str | None,
    timestamp: datetime | None,
) -> int:
    if not points:
        return 0
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
            "StorageResolution": p.resolution,
            **({"Timestamp": timestamp} if timestamp is not None else {}),
        }
        for p in points
    ]
    for i in range(0, len(data), _PUT_BATCH):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[i : i + _PUT_BATCH])
    return len(data)
