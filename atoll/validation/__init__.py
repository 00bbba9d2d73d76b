"""Validation and defaulting of API objects: the one layer every write passes.

Errors name the field by its path in the Kubernetes v1 JSON shape
(`spec.containers[0].ports[1].hostPort`), so a manifest author can find it.
Validators collect every problem; `raise_first` reports the first one, which
keeps messages one line long, and `items` holds them all for tests.

Defaulting (``default_*``) fills in what Kubernetes would, in place; callers
default first and validate the result. The modules: core (Problems, names,
labels, ports), pods (pods and nodes), workloads (replication controllers,
services, endpoints, events) and network (the overlay network, subnet
leases, image registries); text (control characters in every string field).
"""

from __future__ import annotations

from atoll.validation.core import (
    DEFAULT_NAMESPACE,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    MAX_NAME,
    Problems,
    require,
    validate_meta,
)
from atoll.validation.machines import validate_machine
from atoll.validation.network import (
    DEFAULT_NETWORK_NAME,
    VNI_MAX,
    VXLAN,
    VXLAN_PORT,
    default_network,
    validate_network,
    validate_network_object,
    validate_registries,
    validate_subnet,
)
from atoll.validation.pods import (
    SpecProblems,
    default_pod,
    default_pod_spec,
    first_pod_problem,
    pod_spec_problems,
    valid_image,
    validate_node,
    validate_pod,
    validate_pod_spec,
)
from atoll.validation.sriov import validate_sriov_network
from atoll.validation.text import check_object, check_strings, check_text, control_char
from atoll.validation.workloads import (
    default_endpoints,
    default_event,
    default_replication_controller,
    default_service,
    validate_endpoints,
    validate_event,
    validate_replication_controller,
    validate_service,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_NETWORK_NAME",
    "DNS1123_LABEL",
    "DNS1123_SUBDOMAIN",
    "MAX_NAME",
    "VNI_MAX",
    "VXLAN",
    "VXLAN_PORT",
    "Problems",
    "SpecProblems",
    "check_object",
    "check_strings",
    "check_text",
    "control_char",
    "default_endpoints",
    "default_event",
    "default_network",
    "default_pod",
    "default_pod_spec",
    "default_replication_controller",
    "default_service",
    "first_pod_problem",
    "pod_spec_problems",
    "require",
    "valid_image",
    "validate_endpoints",
    "validate_event",
    "validate_machine",
    "validate_meta",
    "validate_network",
    "validate_network_object",
    "validate_node",
    "validate_pod",
    "validate_pod_spec",
    "validate_registries",
    "validate_replication_controller",
    "validate_service",
    "validate_sriov_network",
    "validate_subnet",
]
