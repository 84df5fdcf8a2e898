"""boto3 clients per region and the tags every regionha resource carries."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

TAG_DEPLOYMENT = "regionha:deployment"
TAG_NAME = "regionha:name"

# Standard retry mode backs off on throttling; the state machines retry what is left.
_BOTO_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})


def stack_region(environ: Mapping[str, str] | None = None) -> str:
    """The region this code runs for: the Lambda's own region (where the stack, its state table,
    topics and alarms live), or, outside Lambda, the shell's or profile's region.

    Order: ``AWS_REGION`` (set by the Lambda runtime), ``AWS_DEFAULT_REGION`` (the AWS CLI's and
    SDKs' variable), then the default profile's ``region`` (``~/.aws/config``: the on-prem agent).
    No guessed default: a missing region raises ``ConfigurationError`` (not retried), because a
    wrong region would read and write another stack's state. ``environ``: a function's environment
    read before this process's own (the drill's settings). Follows the Lambda doc "Defined runtime
    environment variables" and the AWS SDKs' region resolution order.
    """
    region = None
    for env in ([environ] if environ is not None else []) + [os.environ]:
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not region:
        region = boto3.session.Session().region_name
    if not region:
        from regionha.errors import ConfigurationError

        raise ConfigurationError("no region: AWS_REGION and AWS_DEFAULT_REGION are not set and no profile "
                                 "names a region")
    return region


class Clients:
    """A boto3 client factory bound to one session; callers always name the region explicitly.

    Handlers run in threads of one process in the local runtime, so a region never comes from
    the environment.
    """

    def __init__(self, session: boto3.session.Session | None = None, endpoint_url: str | None = None):
        if session is None:
            # boto3's default session, so that tests can watch every call through its events.
            if boto3.DEFAULT_SESSION is None:
                boto3.setup_default_session()
            session = boto3.DEFAULT_SESSION
        self._session = session
        self._endpoint_url = endpoint_url
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()  # creating clients from one session is not thread-safe

    def client(self, service: str, region: str, *, config: Config | None = None) -> Any:
        """``config``: a botocore Config merged over the standard one (e.g. short timeouts for a call
        into a region that may be down); clients are cached per (service, region, config)."""
        key = (service, region, id(config) if config is not None else None)
        with self._lock:
            return self._client_locked(service, region, key, config)

    def _client_locked(self, service: str, region: str, key: tuple[Any, ...], config: Config | None = None) -> Any:
        if key not in self._cache:
            merged = _BOTO_CONFIG.merge(config) if config is not None else _BOTO_CONFIG
            kwargs: dict[str, Any] = {"region_name": region, "config": merged}
            if self._endpoint_url:
                kwargs["endpoint_url"] = self._endpoint_url
            self._cache[key] = self._session.client(service, **kwargs)
        return self._cache[key]

    def ec2(self, region: str) -> Any:
        return self.client("ec2", region)

    def route53(self) -> Any:
        return self.client("route53", "us-east-1")

    def route53resolver(self, region: str) -> Any:
        return self.client("route53resolver", region)

    def ssm(self, region: str) -> Any:
        return self.client("ssm", region)


def tags(deployment: str, name: str) -> list[dict[str, str]]:
    """The tags of one regionha resource: who owns it and its stable logical name."""
    return [
        {"Key": TAG_DEPLOYMENT, "Value": deployment},
        {"Key": TAG_NAME, "Value": name},
        {"Key": "Name", "Value": f"{deployment}-{name}"},
    ]


def tag_spec(resource_type: str, deployment: str, name: str) -> list[dict[str, Any]]:
    """TagSpecifications for EC2 create calls, so a resource is never untagged, even for a moment."""
    return [{"ResourceType": resource_type, "Tags": tags(deployment, name)}]


def deployment_filter(deployment: str, name: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]}]
    if name is not None:
        filters.append({"Name": f"tag:{TAG_NAME}", "Values": [name]})
    return filters


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    for t in resource.get("Tags") or resource.get("TagList") or []:
        if t["Key"] == key:
            return t["Value"]
    return None
