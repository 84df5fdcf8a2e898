"""Create a SAM template's resources in the emulated AWS, from the template itself.

The template is transformed by the real SAM translator (``samtranslator``), then every resulting
CloudFormation resource is created through the AWS APIs, in dependency order, with the intrinsic
functions resolved the way CloudFormation resolves them. There is no second, hand-written list of
resources: a resource type this module does not know fails loudly with its name, so the template and
the local runtime cannot drift apart silently.

Local paths (``CodeUri``, ``ContentUri``, ``DefinitionUri``) are swapped for dummy ``s3://`` URIs
before the translation (the translator accepts nothing else) and mapped back afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.intrinsics import Intrinsics, ref_targets
from regionha.local.aws.sam import DEFAULT_REGION, PARTITION, SamTranslation, translate

logger = logging.getLogger(__name__)

_LEFTOVER_SUBSTITUTION = re.compile(r"\$\{[A-Za-z0-9_.:-]+\}")

# API limits on names; a default `<stack>-<LogicalId>` longer than this is shortened with a hash.
_NAME_LIMITS = {
    "AWS::IAM::Role": 64,
    "AWS::Lambda::Function": 64,
    "AWS::Lambda::LayerVersion": 140,
    "AWS::StepFunctions::StateMachine": 80,
    "AWS::Events::Rule": 64,
    "AWS::SNS::Topic": 256,
    "AWS::CloudWatch::Alarm": 255,
    "AWS::CloudWatch::CompositeAlarm": 255,
    "AWS::CloudWatch::Dashboard": 255,
    "AWS::DynamoDB::Table": 255,
    "AWS::S3::Bucket": 63,
    "AWS::SSM::Parameter": 1011,
    "AWS::Logs::LogGroup": 512,
    "AWS::SQS::Queue": 80,
}


# --------------------------------------------------------------------------------------------------
# The provisioned stack


@dataclass(frozen=True)
class StackResource:
    logical_id: str
    type: str
    physical_id: str | None  # what Ref returns
    attributes: dict[str, Any] = field(default_factory=dict)  # what Fn::GetAtt returns
    skipped: str | None = None  # why the resource was not created (condition false, not emulated)


@dataclass(frozen=True)
class StackFunction:
    logical_id: str
    name: str
    arn: str
    region: str
    handler: str
    code_dir: Path | None  # None when the code is not a local directory (e.g. an S3 object)
    runtime: str | None
    timeout: int
    memory: int
    environment: dict[str, str]
    role_arn: str | None = None  # the execution role (the local IAM authorises the handler's calls by it)


@dataclass(frozen=True)
class StackRule:
    logical_id: str
    name: str
    arn: str
    schedule_expression: str | None
    event_pattern: dict[str, Any] | None
    state: str
    targets: list[dict[str, Any]]


@dataclass
class Stack:
    """What provisioning created: physical names and ARNs by logical id, and per-kind views."""

    name: str
    region: str
    account_id: str
    template_path: Path
    parameters: dict[str, Any]
    resources: dict[str, StackResource] = field(default_factory=dict)
    functions: dict[str, StackFunction] = field(default_factory=dict)  # logical id ->
    state_machines: dict[str, str] = field(default_factory=dict)  # name -> ARN
    rules: dict[str, StackRule] = field(default_factory=dict)  # name ->
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # alarm name -> resolved properties
    topics: dict[str, str] = field(default_factory=dict)  # name -> ARN
    outputs: dict[str, Any] = field(default_factory=dict)
    # Template properties the emulation does not apply, e.g. "StateTable: ContributorInsightsSpecification".
    ignored: list[str] = field(default_factory=list)

    def physical_id(self, logical_id: str) -> str:
        resource = self._resource(logical_id)
        if resource.physical_id is None:
            raise ConfigurationError(f"{logical_id} was not created: {resource.skipped}")
        return resource.physical_id

    def attribute(self, logical_id: str, name: str) -> Any:
        attributes = self._resource(logical_id).attributes
        if name not in attributes:
            raise ConfigurationError(f"{logical_id} has no attribute {name!r} (has {sorted(attributes)})")
        return attributes[name]

    def _resource(self, logical_id: str) -> StackResource:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise ConfigurationError(f"stack {self.name} has no resource {logical_id}") from None


# --------------------------------------------------------------------------------------------------
# Provisioning


@dataclass(frozen=True)
class _Created:
    physical_id: str
    attributes: dict[str, Any]


def _dummy_zip(note: str) -> bytes:
    """Deployment package for the emulated Lambda API; the local runtime runs the code from its directory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("LOCAL_RUNTIME.txt", note)
    return buffer.getvalue()


def _tag_list(tags: Any) -> list[dict[str, str]]:
    """CloudFormation writes Tags as a list of Key/Value or (SSM, SAM) as a map; APIs want one or the other."""
    if not tags:
        return []
    if isinstance(tags, Mapping):
        return [{"Key": k, "Value": str(v)} for k, v in tags.items()]
    return [{"Key": t["Key"], "Value": str(t["Value"])} for t in tags]


def _tag_map(tags: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in _tag_list(tags)}


def _error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


class _Provisioner:
    def __init__(self, clients: Clients, translation: SamTranslation, stack_name: str, region: str,
                 parameter_overrides: Mapping[str, Any]):
        self._clients = clients
        self._translation = translation
        self._region = region
        template = translation.template
        self._resources_template: dict[str, dict[str, Any]] = template.get("Resources") or {}
        account_id = clients.client("sts", region).get_caller_identity()["Account"]
        self.stack = Stack(name=stack_name, region=region, account_id=account_id,
                           template_path=translation.template_path,
                           parameters=self._parameters(template.get("Parameters") or {}, parameter_overrides))
        pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{region}:{account_id}:stack/{stack_name}/local",
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self._intrinsics = Intrinsics(pseudo, self.stack.parameters, template.get("Conditions") or {},
                                       template.get("Mappings") or {}, self._ref, self._attribute)
        self._creators: dict[str, Callable[[str, dict[str, Any]], _Created]] = {
            "AWS::IAM::Role": self._role,
            "AWS::Lambda::Function": self._function,
            "AWS::Lambda::LayerVersion": self._layer,
            "AWS::Lambda::Permission": self._permission,
            "AWS::StepFunctions::StateMachine": self._state_machine,
            "AWS::Events::Rule": self._rule,
            "AWS::SNS::Topic": self._topic,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::CloudWatch::CompositeAlarm": self._composite_alarm,
            "AWS::CloudWatch::Dashboard": self._dashboard,
            "AWS::DynamoDB::Table": self._table,
            "AWS::S3::Bucket": self._bucket,
            "AWS::SSM::Parameter": self._ssm_parameter,
            "AWS::Logs::LogGroup": self._log_group,
            "AWS::SQS::Queue": self._queue,
        }

    # ---- template plumbing

    @staticmethod
    def _parameters(declared: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(declared)
        if unknown:
            raise ConfigurationError(f"parameter overrides for undeclared parameters: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise ConfigurationError(f"parameter {name} has no default and no override")
            allowed = spec.get("AllowedValues")
            if allowed is not None and str(value) not in {str(a) for a in allowed}:
                raise ConfigurationError(f"parameter {name}={value!r} is not one of {allowed}")
            kind = spec.get("Type", "String")
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                value = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
            else:
                value = str(value)  # CloudFormation hands every scalar parameter over as a string
            values[name] = value
        return values

    def _ref(self, logical_id: str) -> Any:
        return self.stack.physical_id(logical_id)

    def _attribute(self, logical_id: str, name: str) -> Any:
        if logical_id not in self.stack.resources:
            raise ConfigurationError(f"Fn::GetAtt {logical_id}.{name}: no such resource (or not created yet)")
        return self.stack.attribute(logical_id, name)

    def _order(self) -> list[str]:
        """Logical ids so that every resource comes after what it refers to (template order otherwise)."""
        resources = self._resources_template
        depends: dict[str, set[str]] = {}
        for logical_id, resource in resources.items():
            targets = set(ref_targets(resource.get("Properties") or {}))
            depends_on = resource.get("DependsOn") or []
            targets |= {depends_on} if isinstance(depends_on, str) else set(depends_on)
            depends[logical_id] = {t for t in targets if t in resources and t != logical_id}
        ordered: list[str] = []
        done: set[str] = set()
        while len(ordered) < len(resources):
            ready = [lid for lid in resources if lid not in done and depends[lid] <= done]
            if not ready:
                cycle = sorted(lid for lid in resources if lid not in done)
                raise ConfigurationError(f"circular references between resources: {cycle}")
            ordered.extend(ready)
            done.update(ready)
        return ordered

    def _default_name(self, logical_id: str, resource_type: str) -> str:
        name = f"{self.stack.name}-{logical_id}"
        if resource_type == "AWS::S3::Bucket":
            name = re.sub(r"[^a-z0-9.-]", "-", name.lower())
        limit = _NAME_LIMITS.get(resource_type, 255)
        if len(name) > limit:
            digest = hashlib.sha256(name.encode()).hexdigest()[:8]
            name = f"{name[: limit - 9]}-{digest}"
        return name

    def _ignore(self, logical_id: str, props: dict[str, Any], *handled: str) -> None:
        for key in sorted(set(props) - set(handled)):
            note = f"{logical_id}: {key} is not emulated"
            logger.info(note)
            self.stack.ignored.append(note)

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{PARTITION}:{service}:{self._region}:{self.stack.account_id}:{resource}"

    def _client(self, service: str) -> Any:
        return self._clients.client(service, self._region)

    # ---- run

    def run(self) -> Stack:
        for logical_id in self._order():
            resource = self._resources_template[logical_id]
            resource_type = resource.get("Type", "")
            condition = resource.get("Condition")
            if condition is not None and not self._intrinsics.condition(condition):
                self.stack.resources[logical_id] = StackResource(
                    logical_id, resource_type, None, skipped=f"condition {condition} is false")
                continue
            creator = self._creators.get(resource_type)
            if creator is None:
                raise ConfigurationError(
                    f"{logical_id}: resource type {resource_type} is not emulated by the local runtime; "
                    "add it to regionha.local.aws.provision or change the template")
            props = self._intrinsics.resolve(resource.get("Properties") or {})
            try:
                created = creator(logical_id, props)
            except ClientError as e:
                raise ConfigurationError(f"{logical_id} ({resource_type}): {e}") from e
            self.stack.resources[logical_id] = StackResource(
                logical_id, resource_type, created.physical_id, created.attributes)
            logger.debug("provisioned %s %s -> %s", resource_type, logical_id, created.physical_id)
        for name, output in (self._translation.template.get("Outputs") or {}).items():
            condition = output.get("Condition")
            if condition is None or self._intrinsics.condition(condition):
                self.stack.outputs[name] = self._intrinsics.resolve(output["Value"])
        return self.stack

    # ---- resource types

    def _role(self, logical_id: str, props: dict[str, Any]) -> _Created:
        iam = self._clients.client("iam", self._region)
        name = props.get("RoleName") or self._default_name(logical_id, "AWS::IAM::Role")
        assume = json.dumps(props.get("AssumeRolePolicyDocument") or {})
        try:
            role = iam.get_role(RoleName=name)["Role"]
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=assume)
        except ClientError as e:
            if _error_code(e) != "NoSuchEntity":
                raise
            kwargs: dict[str, Any] = {"RoleName": name, "AssumeRolePolicyDocument": assume,
                                      "Path": props.get("Path", "/"), "Tags": _tag_list(props.get("Tags"))}
            for key in ("Description", "MaxSessionDuration", "PermissionsBoundary"):
                if key in props:
                    kwargs[key] = props[key]
            role = iam.create_role(**kwargs)["Role"]
        for policy in props.get("Policies") or []:
            # SAM's policy templates omit Version; IAM then assumes 2008-10-17, which moto refuses.
            document = {"Version": "2012-10-17", **policy["PolicyDocument"]}
            iam.put_role_policy(RoleName=name, PolicyName=policy["PolicyName"], PolicyDocument=json.dumps(document))
        for policy_arn in props.get("ManagedPolicyArns") or []:
            try:
                iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
            except ClientError as e:
                # moto does not load the AWS-managed policies (and does not enforce IAM at all).
                if _error_code(e) != "NoSuchEntity" or ":iam::aws:policy/" not in policy_arn:
                    raise
                self.stack.ignored.append(f"{logical_id}: AWS-managed policy {policy_arn} not attached")
        self._ignore(logical_id, props, "RoleName", "AssumeRolePolicyDocument", "Path", "Tags", "Description",
                     "MaxSessionDuration", "PermissionsBoundary", "Policies", "ManagedPolicyArns")
        return _Created(name, {"Arn": role["Arn"], "RoleId": role["RoleId"]})

    def _function(self, logical_id: str, props: dict[str, Any]) -> _Created:
        lambda_ = self._client("lambda")
        name = props.get("FunctionName") or self._default_name(logical_id, "AWS::Lambda::Function")
        code_dir = self._translation.local_path(props.get("Code"))
        environment = {k: str(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()}
        config: dict[str, Any] = {
            "FunctionName": name,
            "Role": props["Role"],
            "Handler": props["Handler"],
            "Runtime": props.get("Runtime", "python3.13"),
            "Timeout": int(props.get("Timeout", 3)),
            "MemorySize": int(props.get("MemorySize", 128)),
            "Environment": {"Variables": environment},
            "Layers": list(props.get("Layers") or []),
        }
        for key in ("Description", "Architectures", "TracingConfig", "EphemeralStorage", "LoggingConfig",
                    "VpcConfig"):
            if key in props:
                config[key] = props[key]
        try:
            lambda_.get_function(FunctionName=name)
            # Architectures are fixed at creation; UpdateFunctionConfiguration does not take them.
            # A VpcConfig the template no longer gives is removed, as CloudFormation does.
            update = {k: v for k, v in config.items() if k != "Architectures"}
            update.setdefault("VpcConfig", {"SubnetIds": [], "SecurityGroupIds": []})
            function = lambda_.update_function_configuration(**update)
        except ClientError as e:
            if _error_code(e) != "ResourceNotFoundException":
                raise
            function = lambda_.create_function(
                **config, Code={"ZipFile": _dummy_zip(f"code: {code_dir}")},
                Tags=_tag_map(props.get("Tags")), Publish=False)
        self._ignore(logical_id, props, "FunctionName", "Role", "Handler", "Runtime", "Timeout", "MemorySize",
                     "Environment", "Layers", "Description", "Architectures", "TracingConfig",
                     "EphemeralStorage", "LoggingConfig", "Tags", "Code", "VpcConfig")
        self.stack.functions[logical_id] = StackFunction(
            logical_id=logical_id, name=name, arn=function["FunctionArn"], region=self._region,
            handler=config["Handler"], code_dir=code_dir, runtime=config["Runtime"], timeout=config["Timeout"],
            memory=config["MemorySize"], environment=environment, role_arn=config["Role"])
        return _Created(name, {"Arn": function["FunctionArn"]})

    def _layer(self, logical_id: str, props: dict[str, Any]) -> _Created:
        lambda_ = self._client("lambda")
        name = props.get("LayerName") or self._default_name(logical_id, "AWS::Lambda::LayerVersion")
        # Publishing again would make a new version at every provisioning; the latest one is as good.
        versions = lambda_.list_layer_versions(LayerName=name).get("LayerVersions") or []
        if versions:
            arn = max(versions, key=lambda v: v["Version"])["LayerVersionArn"]
        else:
            kwargs: dict[str, Any] = {"LayerName": name,
                                      "Content": {"ZipFile": _dummy_zip("layer: installed in the interpreter")}}
            for key in ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
                if key in props:
                    kwargs[key] = props[key]
            arn = lambda_.publish_layer_version(**kwargs)["LayerVersionArn"]
        self._ignore(logical_id, props, "LayerName", "Content", "Description", "CompatibleRuntimes",
                     "CompatibleArchitectures", "LicenseInfo")
        return _Created(arn, {"LayerVersionArn": arn})

    def _permission(self, logical_id: str, props: dict[str, Any]) -> _Created:
        # Resource policies are not enforced by the emulation; the invoke path does not consult them.
        return _Created(f"{self.stack.name}-{logical_id}", {})

    def _definition(self, logical_id: str, props: dict[str, Any]) -> str:
        if "Definition" in props:
            text = json.dumps(props["Definition"])
        elif "DefinitionString" in props:
            text = props["DefinitionString"]
        elif "DefinitionS3Location" in props:
            path = self._translation.local_path(props["DefinitionS3Location"])
            if path is None:
                raise ConfigurationError(f"{logical_id}: DefinitionS3Location is not a local file")
            text = path.read_text()
        else:
            raise ConfigurationError(f"{logical_id}: no Definition, DefinitionString or DefinitionUri")
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + key + "}", str(value))
        leftover = sorted(set(_LEFTOVER_SUBSTITUTION.findall(text)))
        if leftover:
            raise ConfigurationError(f"{logical_id}: definition has unresolved substitutions {leftover}")
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigurationError(f"{logical_id}: definition is not JSON after substitution: {e}") from e
        return text

    def _state_machine(self, logical_id: str, props: dict[str, Any]) -> _Created:
        sfn = self._client("stepfunctions")
        name = props.get("StateMachineName") or self._default_name(logical_id, "AWS::StepFunctions::StateMachine")
        definition = self._definition(logical_id, props)
        config: dict[str, Any] = {"definition": definition, "roleArn": props["RoleArn"]}
        logging_config = props.get("LoggingConfiguration")
        if logging_config:
            config["loggingConfiguration"] = {
                "level": logging_config.get("Level", "OFF"),
                "includeExecutionData": bool(logging_config.get("IncludeExecutionData", False)),
                "destinations": [
                    {"cloudWatchLogsLogGroup": {"logGroupArn": d["CloudWatchLogsLogGroup"]["LogGroupArn"]}}
                    for d in logging_config.get("Destinations") or []
                ],
            }
        if "TracingConfiguration" in props:
            config["tracingConfiguration"] = {"enabled": bool(props["TracingConfiguration"].get("Enabled"))}
        existing = [m["stateMachineArn"] for page in sfn.get_paginator("list_state_machines").paginate()
                    for m in page["stateMachines"] if m["name"] == name]
        if existing:
            arn = existing[0]
            sfn.update_state_machine(stateMachineArn=arn, **config)
        else:
            tags = [{"key": t["Key"], "value": t["Value"]} for t in _tag_list(props.get("Tags"))]
            arn = sfn.create_state_machine(name=name, type=props.get("StateMachineType", "STANDARD"),
                                           tags=tags, **config)["stateMachineArn"]
        self._ignore(logical_id, props, "StateMachineName", "Definition", "DefinitionString",
                     "DefinitionS3Location", "DefinitionSubstitutions", "RoleArn", "LoggingConfiguration",
                     "TracingConfiguration", "StateMachineType", "Tags")
        self.stack.state_machines[name] = arn
        return _Created(arn, {"Arn": arn, "Name": name})

    def _rule(self, logical_id: str, props: dict[str, Any]) -> _Created:
        events = self._client("events")
        name = props.get("Name") or self._default_name(logical_id, "AWS::Events::Rule")
        pattern = props.get("EventPattern")
        if isinstance(pattern, str):
            pattern = json.loads(pattern)
        kwargs: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
        if props.get("ScheduleExpression"):
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        if pattern is not None:
            kwargs["EventPattern"] = json.dumps(pattern)
        for key in ("Description", "EventBusName", "RoleArn"):
            if key in props:
                kwargs[key] = props[key]
        arn = events.put_rule(**kwargs)["RuleArn"]
        targets = list(props.get("Targets") or [])
        if targets:
            bus = {"EventBusName": props["EventBusName"]} if "EventBusName" in props else {}
            result = events.put_targets(Rule=name, Targets=targets, **bus)
            if result.get("FailedEntryCount"):
                raise ConfigurationError(f"{logical_id}: targets refused: {result['FailedEntries']}")
        self._ignore(logical_id, props, "Name", "State", "ScheduleExpression", "EventPattern", "Description",
                     "EventBusName", "RoleArn", "Targets")
        self.stack.rules[name] = StackRule(
            logical_id=logical_id, name=name, arn=arn, schedule_expression=props.get("ScheduleExpression"),
            event_pattern=pattern, state=kwargs["State"], targets=targets)
        return _Created(name, {"Arn": arn})

    def _subscribe(self, topic_arn: str, protocol: str, endpoint: str, attributes: dict[str, str]) -> str:
        sns = self._client("sns")
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
            for sub in page["Subscriptions"]:
                if sub["Protocol"] == protocol and sub["Endpoint"] == endpoint:
                    return sub["SubscriptionArn"]
        return sns.subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint,
                             Attributes=attributes, ReturnSubscriptionArn=True)["SubscriptionArn"]

    def _topic(self, logical_id: str, props: dict[str, Any]) -> _Created:
        sns = self._client("sns")
        name = props.get("TopicName") or self._default_name(logical_id, "AWS::SNS::Topic")
        attributes = {k: str(props[k]) for k in ("DisplayName", "FifoTopic", "KmsMasterKeyId") if k in props}
        arn = sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        if props.get("Tags"):
            sns.tag_resource(ResourceArn=arn, Tags=_tag_list(props["Tags"]))
        for sub in props.get("Subscription") or []:
            self._subscribe(arn, sub["Protocol"], sub["Endpoint"], {})
        self._ignore(logical_id, props, "TopicName", "DisplayName", "FifoTopic", "KmsMasterKeyId", "Tags",
                     "Subscription")
        self.stack.topics[name] = arn
        return _Created(arn, {"TopicArn": arn, "TopicName": name})

    def _queue(self, logical_id: str, props: dict[str, Any]) -> _Created:
        # Ref is the queue URL, GetAtt Arn / QueueName (AWS::SQS::Queue return values).
        sqs = self._client("sqs")
        name = props.get("QueueName") or self._default_name(logical_id, "AWS::SQS::Queue")
        keys = ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
                "VisibilityTimeout", "SqsManagedSseEnabled")
        attributes = {k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
                      for k in keys if k in props}
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        if props.get("Tags"):
            sqs.tag_queue(QueueUrl=url, Tags={t["Key"]: t["Value"] for t in _tag_list(props["Tags"])})
        self._ignore(logical_id, props, "QueueName", "Tags", *keys)
        arn = self._arn("sqs", name)
        return _Created(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _subscription(self, logical_id: str, props: dict[str, Any]) -> _Created:
        attributes = {}
        for key in ("FilterPolicy", "RedrivePolicy", "DeliveryPolicy"):
            if key in props:
                attributes[key] = props[key] if isinstance(props[key], str) else json.dumps(props[key])
        for key in ("RawMessageDelivery", "FilterPolicyScope"):
            if key in props:
                attributes[key] = str(props[key]).lower() if key == "RawMessageDelivery" else props[key]
        arn = self._subscribe(props["TopicArn"], props["Protocol"], props["Endpoint"], attributes)
        self._ignore(logical_id, props, "TopicArn", "Protocol", "Endpoint", "FilterPolicy", "RedrivePolicy",
                     "DeliveryPolicy", "RawMessageDelivery", "FilterPolicyScope", "Region")
        return _Created(arn, {"Arn": arn})

    def _alarm(self, logical_id: str, props: dict[str, Any]) -> _Created:
        name = props.get("AlarmName") or self._default_name(logical_id, "AWS::CloudWatch::Alarm")
        # Alarm properties are named exactly like PutMetricAlarm's parameters; botocore rejects strays.
        kwargs = {**props, "AlarmName": name, "Tags": _tag_list(props.get("Tags"))}
        for key in ("Threshold",):
            if key in kwargs:
                kwargs[key] = float(kwargs[key])
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in kwargs:
                kwargs[key] = int(kwargs[key])
        self._client("cloudwatch").put_metric_alarm(**kwargs)
        self.stack.alarms[name] = {"Type": "metric", **kwargs}
        return _Created(name, {"Arn": self._arn("cloudwatch", f"alarm:{name}")})

    def _composite_alarm(self, logical_id: str, props: dict[str, Any]) -> _Created:
        name = props.get("AlarmName") or self._default_name(logical_id, "AWS::CloudWatch::CompositeAlarm")
        kwargs = {**props, "AlarmName": name, "Tags": _tag_list(props.get("Tags"))}
        # moto 5.2.5 has no PutCompositeAlarm: the alarm exists only in this stack's view, which is what
        # the local runtime's alarm evaluation reads (moto never evaluates alarms anyway).
        note = f"{logical_id}: composite alarm {name} is kept in Stack.alarms only (moto has no PutCompositeAlarm)"
        logger.info(note)  # a known limit of the emulator (docs/architecture.md), not a problem of this run
        self.stack.ignored.append(note)
        self.stack.alarms[name] = {"Type": "composite", **kwargs}
        return _Created(name, {"Arn": self._arn("cloudwatch", f"alarm:{name}")})

    def _dashboard(self, logical_id: str, props: dict[str, Any]) -> _Created:
        name = props.get("DashboardName") or self._default_name(logical_id, "AWS::CloudWatch::Dashboard")
        self._client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=props["DashboardBody"])
        self._ignore(logical_id, props, "DashboardName", "DashboardBody")
        return _Created(name, {})

    def _table(self, logical_id: str, props: dict[str, Any]) -> _Created:
        dynamodb = self._client("dynamodb")
        name = props.get("TableName") or self._default_name(logical_id, "AWS::DynamoDB::Table")
        try:
            table = dynamodb.describe_table(TableName=name)["Table"]
        except ClientError as e:
            if _error_code(e) != "ResourceNotFoundException":
                raise
            kwargs: dict[str, Any] = {"TableName": name, "AttributeDefinitions": props["AttributeDefinitions"],
                                      "KeySchema": props["KeySchema"],
                                      "BillingMode": props.get("BillingMode", "PROVISIONED")}
            for key in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes",
                        "TableClass", "DeletionProtectionEnabled"):
                if key in props:
                    kwargs[key] = props[key]
            if "StreamSpecification" in props:
                kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
            if "SSESpecification" in props:
                sse = dict(props["SSESpecification"])
                kwargs["SSESpecification"] = {"Enabled": bool(sse.pop("SSEEnabled", False)), **sse}
            if props.get("Tags"):
                kwargs["Tags"] = _tag_list(props["Tags"])
            table = dynamodb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            wanted = "ENABLED" if ttl.get("Enabled") else "DISABLED"
            if current.get("TimeToLiveStatus") != wanted:
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"], "Enabled": bool(ttl.get("Enabled"))})
        pitr = props.get("PointInTimeRecoverySpecification")
        if pitr:
            dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled"))})
        self._ignore(logical_id, props, "TableName", "AttributeDefinitions", "KeySchema", "BillingMode",
                     "ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableClass",
                     "DeletionProtectionEnabled", "StreamSpecification", "SSESpecification", "Tags",
                     "TimeToLiveSpecification", "PointInTimeRecoverySpecification")
        attributes = {"Arn": table["TableArn"]}
        if table.get("LatestStreamArn"):
            attributes["StreamArn"] = table["LatestStreamArn"]
        return _Created(name, attributes)

    def _bucket(self, logical_id: str, props: dict[str, Any]) -> _Created:
        s3 = self._client("s3")
        name = props.get("BucketName") or self._default_name(logical_id, "AWS::S3::Bucket")
        try:
            s3.head_bucket(Bucket=name)
        except ClientError as e:
            if _error_code(e) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            location = {} if self._region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": self._region}}
            s3.create_bucket(Bucket=name, **location)
        if props.get("VersioningConfiguration"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={
                "Status": props["VersioningConfiguration"]["Status"]})
        if props.get("Tags"):
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tag_list(props["Tags"])})
        self._ignore(logical_id, props, "BucketName", "VersioningConfiguration", "Tags")
        return _Created(name, {
            "Arn": f"arn:{PARTITION}:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self._region}.amazonaws.com",
        })

    def _ssm_parameter(self, logical_id: str, props: dict[str, Any]) -> _Created:
        ssm = self._client("ssm")
        name = props.get("Name") or self._default_name(logical_id, "AWS::SSM::Parameter")
        value = props["Value"]
        if isinstance(value, list):
            value = ",".join(value)
        kwargs: dict[str, Any] = {"Name": name, "Value": str(value), "Type": props.get("Type", "String"),
                                  "Overwrite": True}
        for key in ("Description", "AllowedPattern", "Tier", "DataType"):
            if key in props:
                kwargs[key] = props[key]
        ssm.put_parameter(**kwargs)
        if props.get("Tags"):  # PutParameter refuses Tags together with Overwrite
            ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name, Tags=_tag_list(props["Tags"]))
        self._ignore(logical_id, props, "Name", "Value", "Type", "Description", "AllowedPattern", "Tier",
                     "DataType", "Tags")
        return _Created(name, {"Type": kwargs["Type"], "Value": kwargs["Value"]})

    def _log_group(self, logical_id: str, props: dict[str, Any]) -> _Created:
        logs = self._client("logs")
        name = props.get("LogGroupName") or self._default_name(logical_id, "AWS::Logs::LogGroup")
        try:
            logs.create_log_group(logGroupName=name, tags=_tag_map(props.get("Tags")))
        except ClientError as e:
            if _error_code(e) != "ResourceAlreadyExistsException":
                raise
        if "RetentionInDays" in props:
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
        self._ignore(logical_id, props, "LogGroupName", "Tags", "RetentionInDays")
        return _Created(name, {"Arn": self._arn("logs", f"log-group:{name}:*")})


def provision(clients: Clients, template_path: Path | str, *, stack_name: str = "regionha",
              region: str = DEFAULT_REGION, parameters: Mapping[str, Any] | None = None) -> Stack:
    """Create (or bring up to date) every resource of a SAM template in the emulated AWS.

    Idempotent: provisioning the same template twice into the same emulation finds what exists and
    updates it instead of creating duplicates. Unknown resource types and unsupported intrinsic
    functions raise ConfigurationError naming them.
    """
    translation = translate(template_path, region=region, parameters=parameters)
    return _Provisioner(clients, translation, stack_name, region, parameters or {}).run()
