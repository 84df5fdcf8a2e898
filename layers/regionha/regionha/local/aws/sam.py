"""The SAM transform, offline: a SAM template read with its short-form tags and translated to
CloudFormation by the real translator (``samtranslator``), its local paths (``CodeUri``,
``ContentUri``, ``DefinitionUri``) swapped for dummy ``s3://`` URIs before (the translator accepts
nothing else) and mapped back after."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from regionha.errors import ConfigurationError

DEFAULT_REGION = "ap-southeast-1"
PARTITION = "aws"
# Stands in for the bucket `sam package` would upload to; never created.
LOCAL_CODE_BUCKET = "regionha-local-code"


# --------------------------------------------------------------------------------------------------
# SAM translation


@dataclass(frozen=True)
class SamTranslation:
    """A SAM template transformed to CloudFormation, plus where its local artifacts really are."""

    template_path: Path
    template: dict[str, Any]
    local_paths: dict[str, Path]  # dummy S3 key -> local file or directory

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template.get("Resources", {})

    def local_path(self, location: Any) -> Path | None:
        """The local path behind a translated `Code`/`Content`/`DefinitionS3Location`, if it is one of ours."""
        if not isinstance(location, Mapping):
            return None
        bucket = location.get("S3Bucket", location.get("Bucket"))
        key = location.get("S3Key", location.get("Key"))
        if bucket != LOCAL_CODE_BUCKET or not isinstance(key, str):
            return None
        return self.local_paths.get(key)


class _StaticPolicyLoader:
    """Managed policy names resolve from the translator's bundled map; nothing is asked of IAM."""

    def load(self) -> dict[str, str]:
        return {}


_LOCAL_URI_PROPERTIES = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


def load_template(path: Path) -> dict[str, Any]:
    """A SAM/CloudFormation YAML template, short-form tags (`!Ref`, `!Sub`...) included."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(Path(path).read_text())


def translate(template_path: Path | str, region: str = DEFAULT_REGION,
              parameters: Mapping[str, Any] | None = None) -> SamTranslation:
    """Run the SAM transform offline (no AWS call) and keep the mapping back to local artifacts."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template_path = Path(template_path).resolve()
    template = load_template(template_path)
    local_paths: dict[str, Path] = {}

    def to_dummy_uri(value: Any, owner: str) -> Any:
        if not isinstance(value, str) or value.startswith("s3://"):
            return value
        path = (template_path.parent / value).resolve()
        if not path.exists():
            raise ConfigurationError(f"{owner}: local path {value!r} does not exist ({path})")
        # An S3 key has no leading slash (the translator drops it): absolute paths lose theirs too.
        key = str(path.relative_to(template_path.parent)) if path.is_relative_to(template_path.parent) \
            else str(path).lstrip("/")
        local_paths[key] = path
        return f"s3://{LOCAL_CODE_BUCKET}/{key}"

    for logical_id, resource in (template.get("Resources") or {}).items():
        prop = _LOCAL_URI_PROPERTIES.get(resource.get("Type"))
        properties = resource.get("Properties") or {}
        if prop and prop in properties:
            properties[prop] = to_dummy_uri(properties[prop], logical_id)
    function_globals = (template.get("Globals") or {}).get("Function") or {}
    if "CodeUri" in function_globals:
        function_globals["CodeUri"] = to_dummy_uri(function_globals["CodeUri"], "Globals.Function")

    if "Transform" in template:
        session = boto3.session.Session(region_name=region)  # only read for AWS::Region; no call
        translator = Translator(None, Parser(), boto_session=session)
        policy_loader = _StaticPolicyLoader()
        values = {"AWS::Region": region, "AWS::Partition": PARTITION, **dict(parameters or {})}
        try:
            template = translator.translate(copy.deepcopy(template), parameter_values=values,
                                            get_managed_policy_map=policy_loader.load)
        except Exception as e:  # the translator raises its own hierarchy with the useful message
            raise ConfigurationError(f"SAM transform of {template_path} failed: {e}") from e
        finally:
            # The translator counts its own usage metrics; publishing them to its dummy publisher drops
            # them, else its destructor warns "There are unpublished metrics".
            translator.metrics.publish()
    return SamTranslation(template_path=template_path, template=template, local_paths=local_paths)
