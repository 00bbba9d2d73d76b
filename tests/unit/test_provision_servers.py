"""The pure parts of `coordinator provision`: what to create or remove, and the hosts' firewall rules."""

from __future__ import annotations

import logging

import pytest

from coordinator.cli.provisioning import openstack
from coordinator.cli.provisioning.servers import plan


def test_plan_fills_the_lowest_free_indices() -> None:
    assert plan([], set(), "atomic", 3, exact=False) == (["atomic-1", "atomic-2", "atomic-3"], [])
    assert plan(["atomic-2"], {"atomic-2"}, "atomic", 3, exact=False) == (["atomic-1", "atomic-3"], [])


def test_plan_never_reuses_a_name_someone_else_holds() -> None:
    # atomic-1 exists but is not ours (no prefix tag): skip it.
    assert plan([], {"atomic-1"}, "atomic", 2, exact=False) == (["atomic-2", "atomic-3"], [])


def test_plan_is_a_no_op_at_the_count() -> None:
    ours = ["atomic-1", "atomic-2"]
    assert plan(ours, set(ours), "atomic", 2, exact=False) == ([], [])
    assert plan(ours, set(ours), "atomic", 2, exact=True) == ([], [])


def test_count_never_removes_but_ensure_removes_the_highest_indices() -> None:
    ours = ["atomic-10", "atomic-2", "atomic-1"]
    assert plan(ours, set(ours), "atomic", 1, exact=False) == ([], [])
    assert plan(ours, set(ours), "atomic", 1, exact=True) == ([], ["atomic-2", "atomic-10"])
    assert plan(ours, set(ours), "atomic", 0, exact=True) == ([], ["atomic-1", "atomic-2", "atomic-10"])


def test_host_rules_pin_a_literal_coordinator_address() -> None:
    rules = openstack.host_rules("sg-id", "192.0.2.7", 6443, 10250, 8472)
    assert {(r.direction, r.protocol, r.port_min, r.remote_ip_prefix, r.remote_group_id) for r in rules} == {
        ("ingress", "tcp", 10250, "192.0.2.7/32", None),
        ("ingress", "udp", 8472, None, "sg-id"),
        ("ingress", "icmp", None, "0.0.0.0/0", None),
        ("egress", "tcp", 6443, "192.0.2.7/32", None),
    }


def test_host_rules_open_to_any_address_for_a_host_name() -> None:
    rules = openstack.host_rules("sg-id", "coordinator.example", 6443, 10250, 8472)
    assert {r.remote_ip_prefix for r in rules if r.protocol == "tcp"} == {"0.0.0.0/0"}


def test_rules_compare_by_what_they_allow_not_their_description() -> None:
    a = openstack.Rule("ingress", "icmp", None, None, "0.0.0.0/0", None, "one")
    b = openstack.Rule("ingress", "icmp", None, None, "0.0.0.0/0", None, "other")
    assert a == b and {a} == {b}


@pytest.mark.parametrize(
    "body",
    [
        '{"server": {"name": "a-1", "user_data": "I2Nsb3VkLWNvbmZpZwo="}}',
        '{"server": {"OS-EXT-SRV-ATTR:user_data": "I2Nsb3VkLWNvbmZpZwo=", "id": "x"}}',
    ],
)
def test_keystoneauth_debug_bodies_never_show_user_data(body: str, caplog: pytest.LogCaptureFixture) -> None:
    # On the logger itself: enroll's connect() caps the "keystoneauth" parent at INFO for the process.
    caplog.set_level(logging.DEBUG, logger="keystoneauth.session")
    logging.getLogger("keystoneauth.session").debug("REQ: curl -d '%s'", body)
    assert "I2Nsb3VkLWNvbmZpZwo=" not in caplog.text and "<redacted>" in caplog.text
