"""Machines: the hosts Atoll provisioned (Ironic nodes, OpenStack servers).

A Machine records where a host came from so that `get machines` can show it
beside its node and `unenroll`/`deprovision` know what to delete and which
join token to revoke. It never holds a credential: BMC passwords stay with
the operator and Ironic, and a token appears only by its id. `details` is
free-form, so keys that name a secret are refused here, on every write path.
"""

from __future__ import annotations

import re

from atoll.v1 import machines_pb2
from atoll.validation.core import Problems, check_labels, check_name, is_ip, validate_meta
from atoll.validation.text import check_object

PROVIDERS = ("ironic", "openstack")
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|credential|private|api[_-]?key", re.IGNORECASE)
MAX_DETAILS = 64
MAX_DETAIL_VALUE = 4096


def validate_machine(machine: machines_pb2.Machine) -> Problems:
    p = Problems()
    validate_meta(p, machine.metadata, namespaced=False)
    spec = machine.spec
    if spec.provider not in PROVIDERS:
        p.add("spec.provider", f"must be one of {', '.join(PROVIDERS)}, got {spec.provider!r}")
    if spec.host_name:
        check_name(p, "spec.hostName", spec.host_name.lower())
    if spec.node_name:
        check_name(p, "spec.nodeName", spec.node_name)
    check_labels(p, "spec.labels", spec.labels)
    for i, address in enumerate(spec.addresses):
        if not is_ip(address):
            p.add(f"spec.addresses[{i}]", f"{address!r} is not an IP address")
    if spec.floating_ip and not is_ip(spec.floating_ip):
        p.add("spec.floatingIP", f"{spec.floating_ip!r} is not an IP address")
    if len(spec.details) > MAX_DETAILS:
        p.add("spec.details", f"at most {MAX_DETAILS} entries")
    for key, value in spec.details.items():
        if _SECRET_KEY.search(key):
            p.add(f"spec.details[{key}]", "must not hold credentials (passwords, secrets, tokens)")
        if len(value) > MAX_DETAIL_VALUE:
            p.add(f"spec.details[{key}]", f"at most {MAX_DETAIL_VALUE} characters")
    check_object(p, machine)
    return p
