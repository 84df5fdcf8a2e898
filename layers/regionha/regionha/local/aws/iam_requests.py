"""From a boto3 call to the request IAM judges: its action, the resources it touches (ARNs in the
Service Authorization Reference's formats, with their tags) and the condition keys it supplies
(``aws:RequestTag/*``, ``aws:TagKeys``, ``ec2:CreateAction``, Route 53's change-batch keys...), plus
the dependent actions it needs (IAM user guide, "IAM JSON policy elements"; the Service
Authorization Reference). :mod:`.iam_policy` judges it; :mod:`.iam` hooks it into botocore."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from regionha.local.aws.iam_policy import (
    AuthRequest,
    RequestResource,
    action_name,
    arn_format,
    as_list,
    dependent_actions,
    privilege,
)
from regionha.local.aws.sam import PARTITION

logger = logging.getLogger(__name__)

# EC2 resource ids by prefix -> the Service Authorization Reference's resource type.
_EC2_ID = re.compile(r"^(?P<prefix>[a-z]+)-[0-9a-f]{8,17}$")
_EC2_TYPES = {
    "i": "instance", "sg": "security-group", "rtb": "route-table", "vpc": "vpc", "subnet": "subnet",
    "acl": "network-acl", "igw": "internet-gateway", "pcx": "vpc-peering-connection",
    "eni": "network-interface", "ami": "image", "vol": "volume", "sgr": "security-group-rule",
    "eipalloc": "elastic-ip", "nat": "natgateway", "vpce": "vpc-endpoint",
}
# Resource types an operation creates (beyond Create<Type>, which is derived).
_CREATES = {
    ("ec2", "RunInstances"): {"instance", "network-interface", "volume"},
    ("ec2", "CreateVpcPeeringConnection"): {"vpc-peering-connection"},
    # Rules are resources of their own only when tagged on create (the reference's note).
    ("ec2", "AuthorizeSecurityGroupIngress"): {"security-group-rule"},
    ("ec2", "AuthorizeSecurityGroupEgress"): {"security-group-rule"},
}
_SITUATIONAL = {"ec2:CreateTags", "iam:PassRole", "ssm:GetParameters"}
# Dependent actions needed only when the request changes what they are about (IPv6 addresses of the
# endpoint's interfaces), not for a rename.
_DEPENDENTS_ONLY_WITH = {"route53resolver:UpdateResolverEndpoint": ("UpdateIpAddresses", "ResolverEndpointType")}


# --------------------------------------------------------------------------------------------------
# From a boto3 call to the request IAM judges


class _Tags:
    """Tags of existing resources, read from the emulation's backends (never through the API)."""

    def __init__(self, account: str):
        self._account = account

    def ec2(self, region: str, resource_id: str) -> dict[str, str] | None:
        try:
            from moto.ec2.models import ec2_backends

            return dict(ec2_backends[self._account][region].tags.get(resource_id, {}))
        except Exception:  # noqa: BLE001 - not emulated: the tags are unknown, not empty
            return None

    def route53(self, zone_id: str) -> dict[str, str] | None:
        try:
            from moto.route53.models import route53_backends

            return dict(route53_backends[self._account][PARTITION].list_tags_for_resource(zone_id))
        except Exception:  # noqa: BLE001
            return None


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, str):
        yield key, value


def _request_tags(params: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in params.get("TagSpecifications") or []:
        tags.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags") or []})
    raw = params.get("Tags")
    if isinstance(raw, list):
        tags.update({t["Key"]: t.get("Value", "") for t in raw if isinstance(t, Mapping) and "Key" in t})
    elif isinstance(raw, Mapping):
        tags.update({str(k): str(v) for k, v in raw.items()})
    change = params.get("AddTags")
    if isinstance(change, list):
        tags.update({t["Key"]: t.get("Value", "") for t in change})
    return tags


def _zone_id(value: str) -> str:
    return value.rsplit("/", 1)[-1]


class RequestBuilder:
    """Turns (service, operation, parameters) into the AuthRequest IAM would evaluate."""

    def __init__(self, account: str):
        self.account = account
        self._tags = _Tags(account)

    def build(self, service: str, operation: str, params: Mapping[str, Any], region: str) -> AuthRequest | None:
        action = action_name(service, operation)
        if action is None:
            return None
        prefix = action.split(":", 1)[0]
        context = self._context(prefix, operation, params)
        resources = self._resources(prefix, operation, action, params, region)
        situational = self._situational(prefix, operation, action, params, region, context)
        return AuthRequest(action, resources, context, situational)

    # ---- condition keys of the request

    def _context(self, prefix: str, operation: str, params: Mapping[str, Any]) -> dict[str, list[str]]:
        context: dict[str, list[str]] = {}
        tags = _request_tags(params)
        if tags:
            for key, value in tags.items():
                context[f"aws:requesttag/{key}".lower()] = [value]
            context["aws:tagkeys"] = list(tags)
        if prefix == "route53" and operation == "ChangeResourceRecordSets":
            changes = (params.get("ChangeBatch") or {}).get("Changes") or []
            context["route53:changeresourcerecordsetsactions"] = [c["Action"] for c in changes]
            context["route53:changeresourcerecordsetsrecordtypes"] = [c["ResourceRecordSet"]["Type"] for c in changes]
            context["route53:changeresourcerecordsetsnormalizedrecordnames"] = [
                c["ResourceRecordSet"]["Name"].lower().rstrip(".") for c in changes]
        if prefix == "cloudwatch" and "Namespace" in params:
            context["cloudwatch:namespace"] = [params["Namespace"]]
        if prefix == "dynamodb":
            leading = self._leading_keys(params)
            if leading:
                context["dynamodb:leadingkeys"] = leading
        return context

    def _leading_keys(self, params: Mapping[str, Any]) -> list[str]:
        item = params.get("Key") or params.get("Item")
        if not isinstance(item, Mapping) or "TableName" not in params:
            return []
        hash_key = self._hash_key(params["TableName"])
        value = item.get(hash_key) if hash_key else None
        if isinstance(value, Mapping) and value:
            return [str(next(iter(value.values())))]
        return []

    def _hash_key(self, table: str) -> str | None:
        try:
            from moto.dynamodb.models import dynamodb_backends

            for backend in dynamodb_backends[self.account].values():
                if table in backend.tables:
                    return backend.tables[table].hash_key_attr
        except Exception:  # noqa: BLE001
            return None
        return None

    # ---- resources

    def _resources(self, prefix: str, operation: str, action: str, params: Mapping[str, Any],
                   region: str) -> list[RequestResource]:
        types = {t: spec for t, spec in privilege(action)["resource_types"].items() if t}
        if not types:
            return [RequestResource("*")]
        named = self._named(prefix, operation, params, region)
        creates = _CREATES.get((prefix, operation))
        if creates == {"security-group-rule"} and not params.get("TagSpecifications"):
            creates = set()
        if creates is None:
            creates = {t for t in types if operation.lower() == "create" + t.replace("-", "").lower()}
        resources: list[RequestResource] = []
        for resource_type, spec in types.items():
            if named.get(resource_type):
                resources.extend(named[resource_type])
            elif resource_type in creates:
                arn = self._fill(prefix, resource_type, region, "*")
                resources.append(RequestResource(arn, tags={}))
            elif spec.get("required"):
                logger.debug("%s: required resource %s not named by the parameters", action, resource_type)
                resources.append(RequestResource(f"<{resource_type}>", known=False))
        # Types exist but the parameters name none (e.g. a route table association id): unknown.
        return resources or [RequestResource(f"<{'|'.join(types)}>", known=False)]

    def _fill(self, prefix: str, resource_type: str, region: str, resource_id: str) -> str:
        arn = arn_format(prefix, resource_type)
        arn = arn.replace("${Partition}", PARTITION).replace("${Region}", region).replace("${Account}", self.account)
        return re.sub(r"\$\{[^}]+\}", lambda _: resource_id, arn, count=1)

    def _named(self, prefix: str, operation: str, params: Mapping[str, Any],
               region: str) -> dict[str, list[RequestResource]]:
        named: dict[str, list[RequestResource]] = {}

        def add(resource_type: str, arn: str, tags: Mapping[str, str] | None) -> None:
            if all(r.arn != arn for r in named.get(resource_type, [])):
                named.setdefault(resource_type, []).append(RequestResource(arn, tags=tags))

        if prefix in ("ec2", "ssm"):
            for key, value in _strings(params):
                match = _EC2_ID.match(value)
                resource_type = _EC2_TYPES.get(match.group("prefix")) if match else None
                if resource_type is None or key in ("ClientToken", "DryRun"):
                    continue
                in_region = params.get("PeerRegion", region) if key == "PeerVpcId" else region
                if resource_type == "image":
                    add("image", f"arn:{PARTITION}:ec2:{in_region}::image/{value}", None)
                    continue
                arn = f"arn:{PARTITION}:ec2:{in_region}:{self.account}:{resource_type}/{value}"
                add(resource_type, arn, self._tags.ec2(in_region, value))
        if prefix == "ssm":
            if "DocumentName" in params:
                name = params["DocumentName"]
                owner = "" if name.startswith(("AWS-", "AWSSupport-", "Amazon")) else self.account
                add("document", f"arn:{PARTITION}:ssm:{region}:{owner}:document/{name}", None)
            names = as_list(params.get("Name")) + as_list(params.get("Names"))
            for name in names:
                owner = "" if name.startswith("/aws/service/") else self.account
                add("parameter", f"arn:{PARTITION}:ssm:{region}:{owner}:parameter/{name.lstrip('/')}", None)
        elif prefix == "route53":
            if operation == "GetChange":
                add("change", f"arn:{PARTITION}:route53:::change/{_zone_id(params['Id'])}", None)
            else:
                zones = as_list(params.get("HostedZoneId")) + as_list(params.get("ResourceIds"))
                if operation in ("GetHostedZone", "DeleteHostedZone") or "ResourceId" in params:
                    zones += as_list(params.get("Id")) + as_list(params.get("ResourceId"))
                for zone in zones:
                    zone = _zone_id(zone)
                    add("hostedzone", f"arn:{PARTITION}:route53:::hostedzone/{zone}", self._tags.route53(zone))
        elif prefix == "route53resolver":
            if "ResolverEndpointId" in params:
                add("resolver-endpoint", self._fill(prefix, "resolver-endpoint", region,
                                                    params["ResolverEndpointId"]), None)
            if "ResourceArn" in params:
                add(params["ResourceArn"].split(":")[5].split("/")[0], params["ResourceArn"], None)
        elif prefix == "lambda" and "FunctionName" in params:
            name = params["FunctionName"]
            arn = name if name.startswith("arn:") else self._fill(prefix, "function", region, name.split(":")[0])
            add("function", ":".join(arn.split(":")[:7]), None)
        elif prefix == "dynamodb" and "TableName" in params:
            add("table", self._fill(prefix, "table", region, params["TableName"]), None)
        elif prefix == "sqs" and ("QueueUrl" in params or "QueueName" in params):
            # A queue URL ends in <account>/<name>; the queue's ARN is its region's and account's.
            name = str(params.get("QueueName") or params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
            add("queue", f"arn:{PARTITION}:sqs:{region}:{self.account}:{name}", None)
        elif prefix == "sns" and "TopicArn" in params:
            add("topic", params["TopicArn"], None)
        elif prefix == "s3" and "Bucket" in params:
            if "Key" in params:
                add("object", f"arn:{PARTITION}:s3:::{params['Bucket']}/{params['Key']}", None)
            add("bucket", f"arn:{PARTITION}:s3:::{params['Bucket']}", None)
        elif prefix == "states":
            for key, resource_type in (("executionArn", "execution"), ("stateMachineArn", "statemachine")):
                if key in params:
                    add(resource_type, params[key], None)
        elif prefix == "events":
            rule = params.get("Name") or params.get("Rule")
            bus = params.get("EventBusName")
            if rule:
                path = f"{bus}/{rule}" if bus and bus != "default" else rule
                add("rule-on-default-event-bus" if path == rule else "rule-on-custom-event-bus",
                    f"arn:{PARTITION}:events:{region}:{self.account}:rule/{path}", None)
        elif prefix == "cloudwatch":
            for name in as_list(params.get("AlarmNames")) + as_list(params.get("AlarmName")):
                add("alarm", f"arn:{PARTITION}:cloudwatch:{region}:{self.account}:alarm:{name}", None)
        return named

    # ---- dependent actions

    def _situational(self, prefix: str, operation: str, action: str, params: Mapping[str, Any], region: str,
                     context: dict[str, list[str]]) -> list[tuple[str, list[RequestResource], dict[str, list[str]]]]:
        checks: list[tuple[str, list[RequestResource], dict[str, list[str]]]] = []
        unknown = [RequestResource("<dependent>", known=False)]
        needs = _DEPENDENTS_ONLY_WITH.get(action)
        for dependent in dependent_actions(action) if needs is None or any(k in params for k in needs) else []:
            if dependent not in _SITUATIONAL:
                checks.append((dependent, unknown, {}))
        if prefix == "ec2" and params.get("TagSpecifications") and operation != "CreateTags":
            # Tag on create: ec2:CreateTags on the new resources, with ec2:CreateAction (EC2 User Guide,
            # "Grant permission to tag Amazon EC2 resources during creation").
            created = [r for r in self._resources(prefix, operation, action, params, region) if r.arn.endswith("/*")]
            checks.append(("ec2:CreateTags", created or unknown, {**context, "ec2:createaction": [operation]}))
        passed = [v for k, v in _strings(params) if k in ("RoleArn", "Arn") and ":iam::" in v and ":role/" in v]
        if "iam:PassRole" in dependent_actions(action) or (prefix == "events" and operation == "PutTargets"):
            for role_arn in passed:
                service = {"events": "events.amazonaws.com", "ec2": "ec2.amazonaws.com"}.get(prefix, "")
                checks.append(("iam:PassRole", [RequestResource(role_arn)],
                               {"iam:passedtoservice": [service]} if service else {}))
        if str(params.get("ImageId", "")).startswith("resolve:ssm:"):
            checks.append(("ssm:GetParameters", unknown, {}))
        return checks
