"""botocore's JSON models parsed once per process (the local runtime's process and the test workers)."""

from __future__ import annotations

import botocore.session

from regionha.local.aws.models import share_botocore_models


def test_two_sessions_share_one_parsed_model_and_sharing_twice_changes_nothing():
    share_botocore_models()
    share_botocore_models()  # idempotent: no second wrapper around the first
    first = botocore.session.Session().get_component("data_loader").load_service_model("route53", "service-2")
    second = botocore.session.Session().get_component("data_loader").load_service_model("route53", "service-2")
    assert first is second
    assert "ChangeResourceRecordSets" in first["operations"]
