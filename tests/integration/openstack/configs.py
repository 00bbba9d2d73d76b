"""Configuration files of the test control plane: the least each service needs on 127.0.0.1.

Choices that are not defaults, and why:
- keystone: fernet tokens, bcrypt at 4 rounds (every token request checks a
  password; the default 12 rounds costs a quarter second each on this size).
- nova: ``fake.FakeDriverWithoutFakeNodes`` (plain ``FakeDriver`` refuses a
  second start in the same state dir), no waiting for VIF plugging (no L2
  agent ever reports it), host discovery by the scheduler every 2 s and
  heartbeats every 2 s (the harness waits for both before the first boot).
- neutron: ML2 with flat (the external network) and vxlan (tenant networks)
  types, the ``router`` service plugin for floating IPs, and the test-only
  ``atoll_noagent`` mechanism driver that binds ports without an agent.
- glance: one file store under the run dir.
Every service logs to stderr, which the harness sends to ``<run dir>/logs``.
"""

from __future__ import annotations

import configparser
import io
import pathlib
from dataclasses import dataclass

PASSWORD = "atoll-test"  # every service user's; loopback-only throwaway control plane


@dataclass(frozen=True)
class Ports:
    mysql: int
    amqp: int
    epmd: int
    erlang_dist: int
    keystone: int
    glance: int
    placement: int
    nova: int
    neutron: int


def ini(sections: dict[str, dict[str, object]]) -> str:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, values in sections.items():
        if name != "DEFAULT":
            parser.add_section(name)
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parser.set(name, key, text)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def db(ports: Ports, name: str) -> str:
    return f"mysql+pymysql://openstack:{PASSWORD}@127.0.0.1:{ports.mysql}/{name}"


def transport(ports: Ports) -> str:
    return f"rabbit://guest:guest@127.0.0.1:{ports.amqp}/"


def keystone_url(ports: Ports) -> str:
    return f"http://127.0.0.1:{ports.keystone}/v3"


def _authtoken(ports: Ports, user: str) -> dict[str, object]:
    return {
        "www_authenticate_uri": keystone_url(ports),
        "auth_url": keystone_url(ports),
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": user,
        "password": PASSWORD,
        "region_name": "RegionOne",
    }


def _client(ports: Ports, user: str) -> dict[str, object]:
    """A [placement]/[neutron]/[nova] section: how one service calls another."""
    return {**_authtoken(ports, user), "valid_interfaces": "public"}


def _common(run: pathlib.Path, service: str, ports: Ports) -> dict[str, object]:
    return {
        "debug": False,
        "use_stderr": True,
        "state_path": str(run / service),
        "transport_url": transport(ports),
    }


def keystone(run: pathlib.Path, ports: Ports) -> str:
    return ini(
        {
            "DEFAULT": {"debug": False, "use_stderr": True},
            "database": {"connection": db(ports, "keystone")},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": str(run / "keystone" / "fernet-keys")},
            "fernet_receipts": {"key_repository": str(run / "keystone" / "fernet-keys")},
            "credential": {"key_repository": str(run / "keystone" / "credential-keys")},
            "identity": {"password_hash_rounds": 4},
            "cache": {"enabled": False},
        }
    )


def glance(run: pathlib.Path, ports: Ports, venv: pathlib.Path) -> str:
    return ini(
        {
            "DEFAULT": {
                "debug": False,
                "use_stderr": True,
                "enabled_backends": "fs:file",
                "image_cache_dir": str(run / "glance" / "cache"),
            },
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": str(run / "glance" / "images")},
            "os_glance_staging_store": {"filesystem_store_datadir": str(run / "glance" / "staging")},
            "os_glance_tasks_store": {"filesystem_store_datadir": str(run / "glance" / "tasks")},
            "database": {"connection": db(ports, "glance")},
            "keystone_authtoken": _authtoken(ports, "glance"),
            "paste_deploy": {
                "flavor": "keystone",
                "config_file": str(venv / "etc" / "glance" / "glance-api-paste.ini"),
            },
            "oslo_concurrency": {"lock_path": str(run / "glance" / "locks")},
        }
    )


def placement(run: pathlib.Path, ports: Ports) -> str:
    return ini(
        {
            "DEFAULT": {"debug": False, "use_stderr": True},
            "placement_database": {"connection": db(ports, "placement")},
            "api": {"auth_strategy": "keystone"},
            "keystone_authtoken": _authtoken(ports, "placement"),
        }
    )


def neutron(run: pathlib.Path, ports: Ports, venv: pathlib.Path) -> str:
    return ini(
        {
            "DEFAULT": {
                **_common(run, "neutron", ports),
                "core_plugin": "ml2",
                "service_plugins": "router",
                "auth_strategy": "keystone",
                "api_paste_config": str(venv / "etc" / "neutron" / "api-paste.ini"),
                "notify_nova_on_port_status_changes": True,
                "notify_nova_on_port_data_changes": True,
                "dhcp_agent_notification": False,
            },
            "database": {"connection": db(ports, "neutron")},
            "keystone_authtoken": _authtoken(ports, "neutron"),
            "nova": _client(ports, "nova"),
            "oslo_concurrency": {"lock_path": str(run / "neutron" / "locks")},
            "oslo_messaging_notifications": {"driver": "noop"},
        }
    )


def ml2() -> str:
    return ini(
        {
            "ml2": {
                "type_drivers": "flat,vxlan",
                "tenant_network_types": "vxlan",
                "mechanism_drivers": "atoll_noagent",
                "extension_drivers": "port_security",
            },
            "ml2_type_flat": {"flat_networks": "public"},
            "ml2_type_vxlan": {"vni_ranges": "1:1000"},
        }
    )


def nova(run: pathlib.Path, ports: Ports, venv: pathlib.Path) -> str:
    return ini(
        {
            "DEFAULT": {
                **_common(run, "nova", ports),
                "compute_driver": "fake.FakeDriverWithoutFakeNodes",
                "host": "atoll-test-compute",
                "my_ip": "127.0.0.1",
                "instances_path": str(run / "nova" / "instances"),
                "vif_plugging_is_fatal": False,
                "vif_plugging_timeout": 0,
                # Heartbeats every 2 s (default 10): the harness waits for one before booting.
                "report_interval": 2,
                # nova-compute reports its resources to placement every 5 s (default 60), so
                # it can start before placement answers and still register in time.
                "update_resources_interval": 5,
            },
            "api": {"auth_strategy": "keystone"},
            "wsgi": {"api_paste_config": str(venv / "etc" / "nova" / "api-paste.ini")},
            "api_database": {"connection": db(ports, "nova_api")},
            "database": {"connection": db(ports, "nova")},
            "keystone_authtoken": _authtoken(ports, "nova"),
            "placement": _client(ports, "placement"),
            "neutron": _client(ports, "neutron"),
            # nova sends its own token beside the user's to neutron, glance and placement.
            "service_user": {**_authtoken(ports, "nova"), "send_service_user_token": True},
            "glance": {"valid_interfaces": "public", "region_name": "RegionOne"},
            # The scheduler maps new compute hosts into cell1 itself, every 2 s.
            "scheduler": {"discover_hosts_in_cells_interval": 2, "workers": 1},
            "conductor": {"workers": 1},
            "oslo_concurrency": {"lock_path": str(run / "nova" / "locks")},
            "oslo_messaging_notifications": {"driver": "noop"},
        }
    )


def rabbitmq(ports: Ports) -> str:
    # Only loopback, no plugins; guest is allowed on loopback by default.
    return f"listeners.tcp.1 = 127.0.0.1:{ports.amqp}\nloopback_users = none\nlog.console = true\n"
