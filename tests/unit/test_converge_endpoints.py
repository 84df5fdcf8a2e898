"""Gateway endpoints (the egress of private subnets' package installs): converge, drift, teardown."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from inprocess import fix_moto_endpoint_routes
from regionha.aws import Clients, deployment_filter
from regionha.converge.network import converge_vpc, live_endpoints, teardown_vpc
from regionha.converge.routes import converge_gateway_endpoints
from regionha.topology import Topology, parse_topology

RUN = "run-1"


@pytest.fixture
def osaka(moto_aws: None, topology: Topology) -> Any:
    fix_moto_endpoint_routes()  # ModifyVpcEndpoint moves the routes, as on AWS
    converge_vpc(topology, "osaka", Clients(), RUN)
    return boto3.client("ec2", region_name="ap-northeast-3")


def _vpc_id(ec2: Any, topology: Topology) -> str:
    return ec2.describe_vpcs(Filters=deployment_filter(topology.deployment, "osaka"))["Vpcs"][0]["VpcId"]


def _tables(ec2: Any, topology: Topology) -> dict[str, str]:
    tables = ec2.describe_route_tables(Filters=deployment_filter(topology.deployment))["RouteTables"]
    return {next(t["Value"] for t in rt["Tags"] if t["Key"] == "regionha:name"): rt["RouteTableId"] for rt in tables}


def test_the_s3_endpoint_is_built_into_b3_rt_once(topology: Topology, osaka: Any, call_counter: Any) -> None:
    first = converge_gateway_endpoints(topology, "osaka", Clients(), RUN)
    call_counter.calls.clear()
    second = converge_gateway_endpoints(topology, "osaka", Clients(), "run-2")

    assert [(o.kind, o.name, o.action) for o in first] == [("gateway_endpoint", "osaka-s3-endpoint", "created")]
    assert [o.action for o in second] == ["unchanged"]
    assert call_counter.mutating == []
    (endpoint,) = live_endpoints(osaka, topology.deployment, _vpc_id(osaka, topology))
    assert endpoint["ServiceName"] == "com.amazonaws.ap-northeast-3.s3"
    assert endpoint["VpcEndpointType"] == "Gateway"
    assert endpoint["RouteTableIds"] == [_tables(osaka, topology)["B3-rt"]]
    # EC2 puts the prefix-list route into the table; B3 still has no default route.
    b3 = osaka.describe_route_tables(RouteTableIds=[_tables(osaka, topology)["B3-rt"]])["RouteTables"][0]
    assert [r["GatewayId"] for r in b3["Routes"] if r.get("DestinationPrefixListId")] == [endpoint["VpcEndpointId"]]
    assert not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in b3["Routes"])


def test_route_table_drift_is_fixed_and_an_unnamed_endpoint_deleted(topology: Topology, osaka: Any) -> None:
    converge_gateway_endpoints(topology, "osaka", Clients(), RUN)
    data = topology.to_json()
    osaka_vpc = next(v for v in data["vpcs"] if v["name"] == "osaka")
    osaka_vpc["gateway_endpoints"] = [{"service": "s3", "route_tables": ["B2-rt", "B3-rt"]}]
    wider = parse_topology(data)

    (updated,) = converge_gateway_endpoints(wider, "osaka", Clients(), RUN)
    assert updated.action == "updated"
    (endpoint,) = live_endpoints(osaka, topology.deployment, _vpc_id(osaka, topology))
    tables = _tables(osaka, topology)
    assert sorted(endpoint["RouteTableIds"]) == sorted([tables["B2-rt"], tables["B3-rt"]])
    b2 = osaka.describe_route_tables(RouteTableIds=[tables["B2-rt"]])["RouteTables"][0]
    assert [r["GatewayId"] for r in b2["Routes"] if r.get("DestinationPrefixListId")] == [endpoint["VpcEndpointId"]]

    osaka_vpc["gateway_endpoints"] = []
    (deleted,) = converge_gateway_endpoints(parse_topology(data), "osaka", Clients(), RUN)
    assert (deleted.name, deleted.action) == ("osaka-s3-endpoint", "deleted")
    assert live_endpoints(osaka, topology.deployment, _vpc_id(osaka, topology)) == []


def test_an_endpoint_on_an_unknown_route_table_is_refused_before_any_call(topology: Topology) -> None:
    data = topology.to_json()
    next(v for v in data["vpcs"] if v["name"] == "osaka")["gateway_endpoints"] = [
        {"service": "s3", "route_tables": ["B9-rt"]},
        {"service": "s3", "route_tables": ["B3-rt"]},
    ]
    with pytest.raises(ValueError) as refused:
        parse_topology(data)
    message = str(refused.value)
    assert "vpcs[1].gateway_endpoints[0].route_tables[0]: no route table 'B9-rt' in VPC osaka" in message
    assert "vpcs[1].gateway_endpoints[1].service: a second s3 endpoint" in message


def test_teardown_deletes_the_endpoint_before_the_route_tables(topology: Topology, osaka: Any) -> None:
    converge_gateway_endpoints(topology, "osaka", Clients(), RUN)
    outcomes = teardown_vpc(topology, "osaka", Clients())
    kinds = [o.kind for o in outcomes if o.action == "deleted"]
    assert kinds.index("gateway_endpoint") < kinds.index("route_table")
    assert osaka.describe_vpcs(Filters=deployment_filter(topology.deployment, "osaka"))["Vpcs"] == []
