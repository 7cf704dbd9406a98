"""`unison status`'s live figures over HTTP, against a real local server standing in for the Serve proxy."""

from collections.abc import Iterator
from typing import Any

import pytest
from tests.unit.fakes import json_server

from unison.ops import report
from unison.ops.stack import free_ports

# path -> (status, body); a body that is not a dict or list is sent as is
ROUTES: dict[str, tuple[int, Any]] = {}


@pytest.fixture
def server() -> Iterator[str]:
    ROUTES.clear()
    with json_server(ROUTES) as url:
        yield url


def test_ops_report_adds_the_address(server: str) -> None:
    ROUTES["/v1/ops"] = (200, {"ready": True, "online": {"requests_per_s": 1.5}})
    assert report.ops_report(server) == {"url": server, "ready": True, "online": {"requests_per_s": 1.5}}


def test_ops_report_names_a_bad_answer(server: str) -> None:
    ROUTES["/v1/ops"] = (503, {"error": "x" * 500})
    figures = report.ops_report(server)
    assert set(figures) == {"error"}
    assert figures["error"].startswith("/v1/ops answered 503: {\"error\": \"xxx")
    assert len(figures["error"]) == len("/v1/ops answered 503: ") + 200


def test_ops_report_when_nothing_listens() -> None:
    figures = report.ops_report(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=5)
    assert set(figures) == {"error"} and figures["error"].startswith("no live figures: ")
    assert report.unavailable("Serve is not up") == {"error": "no live figures: Serve is not up"}


def test_stage_placement_per_application(server: str) -> None:
    stage = {"model": "triage:1:fp32", "stage": 0, "bundle": 1}
    ROUTES["/v1/models"] = (200, {"replica": {"stages": [stage, {**stage, "stage": 1}]}})
    ROUTES["/b/v1/models"] = (200, {"replica": {}})  # not sharded
    ROUTES["/c/v1/models"] = (200, "not json")  # answers badly: skipped
    applications = {"a": {"route_prefix": "/"}, "b": {"route_prefix": "/b/"}, "c": {"route_prefix": "/c"},
                    "d": {"route_prefix": None}}
    rows = report.stage_placement(server, applications)
    assert rows == [{"application": "a", **stage}, {"application": "a", **stage, "stage": 1},
                    {"application": "d", **stage}, {"application": "d", **stage, "stage": 1}]


def test_stage_placement_when_nothing_listens() -> None:
    assert report.stage_placement(f"http://127.0.0.1:{free_ports(1)[0]}", {"a": {}}, timeout=5) == []
