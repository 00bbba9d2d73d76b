"""atoll.validation for replication controllers, services, endpoints and events, on protos directly."""

from __future__ import annotations

from atoll import validation
from atoll.v1 import meta_pb2, pod_pb2, workloads_pb2


def problems(p: validation.Problems) -> list[tuple[str, str]]:
    return p.items


def controller(**spec: object) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController(
        metadata=meta_pb2.ObjectMeta(name="apache"),
        spec=workloads_pb2.ReplicationControllerSpec(
            template=workloads_pb2.PodTemplateSpec(
                metadata=meta_pb2.ObjectMeta(labels={"name": "apache"}),
                spec=pod_pb2.PodSpec(containers=[pod_pb2.Container(name="apache", image="fedora/apache")]),
            ),
            **spec,  # type: ignore[arg-type]
        ),
    )
    return rc


def checked_rc(rc: workloads_pb2.ReplicationController) -> list[tuple[str, str]]:
    validation.default_replication_controller(rc)
    return problems(validation.validate_replication_controller(rc))


# ------------------------------------------------------------------ replication controllers


def test_rc_defaults_follow_kubernetes_v1() -> None:
    rc = controller()
    validation.default_replication_controller(rc)
    assert rc.metadata.namespace == "default"
    assert rc.spec.replicas == 1
    assert dict(rc.spec.selector) == {"name": "apache"}
    assert dict(rc.metadata.labels) == {"name": "apache"}  # an unlabelled controller takes its pods' labels
    template = rc.spec.template.spec
    assert template.restart_policy == pod_pb2.RESTART_POLICY_ALWAYS
    assert template.termination_grace_period_seconds == 30
    assert template.containers[0].image_pull_policy == pod_pb2.PULL_POLICY_IF_NOT_PRESENT
    assert validation.validate_replication_controller(rc).items == []


def test_rc_defaults_keep_what_is_written() -> None:
    rc = controller(replicas=0, selector={"name": "apache"})
    rc.metadata.labels["app"] = "web"
    validation.default_replication_controller(rc)
    assert (rc.spec.replicas, dict(rc.metadata.labels)) == (0, {"app": "web"})


def test_rc_problems() -> None:
    assert checked_rc(controller(replicas=-1)) == [("spec.replicas", "must not be negative, got -1")]
    assert checked_rc(controller(selector={"name": "web"})) == [
        ("spec.template.metadata.labels", "selector name=web does not match template labels name=apache")
    ]
    # A selector may ask for less than the template's labels, not more.
    assert (
        checked_rc(controller(selector={"name": "apache", "tier": "a"}))[0][0]
        == "spec.template.metadata.labels"
    )
    rc = controller()
    rc.spec.template.metadata.labels.clear()
    assert checked_rc(rc) == [
        ("spec.selector", "is required: set it, or give the template labels to select its pods by")
    ]
    rc = controller()
    rc.spec.ClearField("template")
    assert checked_rc(rc) == [("spec.template", "is required: it describes the pods to run")]


def test_rc_template_is_validated_like_a_pod() -> None:
    rc = controller()
    rc.spec.template.spec.containers[0].ports.add(container_port=0)
    rc.spec.template.spec.containers[0].volume_mounts.add(name="data", mount_path="/data")
    rc.spec.template.spec.restart_policy = pod_pb2.RESTART_POLICY_NEVER
    assert checked_rc(rc) == [
        ("spec.template.spec.containers[0].ports[0].containerPort", "must be between 1 and 65535, got 0"),
        (
            "spec.template.spec.containers[0].volumeMounts[0].name",
            "volume 'data' is not declared in spec.template.spec.volumes",
        ),
        ("spec.template.spec.restartPolicy", "must be Always for a replication controller's pods, got Never"),
    ]
    rc = controller()
    rc.spec.template.spec.ClearField("containers")
    assert checked_rc(rc) == [("spec.template.spec.containers", "must have at least one container")]


# ------------------------------------------------------------------ services


def service(*ports: workloads_pb2.ServicePort, **spec: object) -> workloads_pb2.Service:
    return workloads_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="frontend"),
        spec=workloads_pb2.ServiceSpec(
            ports=list(ports) or [workloads_pb2.ServicePort(port=80)],
            **({"selector": {"name": "apache"}} | spec),  # type: ignore[arg-type]
        ),
    )


def checked_svc(svc: workloads_pb2.Service) -> list[tuple[str, str]]:
    validation.default_service(svc)
    return problems(validation.validate_service(svc))


def test_service_defaults() -> None:
    svc = service(
        workloads_pb2.ServicePort(name="http", port=80),
        workloads_pb2.ServicePort(name="web", port=8080, target_port_name="web"),
    )
    validation.default_service(svc)
    assert svc.metadata.namespace == "default"
    assert svc.spec.session_affinity == "None"
    assert [(p.protocol, p.target_port, p.target_port_name) for p in svc.spec.ports] == [
        (meta_pb2.PROTOCOL_TCP, 80, ""),
        (meta_pb2.PROTOCOL_TCP, 0, "web"),
    ]
    assert validation.validate_service(svc).items == []


def test_service_ports() -> None:
    assert checked_svc(workloads_pb2.Service(metadata=meta_pb2.ObjectMeta(name="frontend"))) == [
        ("spec.ports", "must have at least one port")
    ]
    assert checked_svc(service(workloads_pb2.ServicePort(port=65536))) == [
        ("spec.ports[0].port", "must be between 1 and 65535, got 65536"),
        ("spec.ports[0].targetPort", "must be between 1 and 65535, got 65536"),
    ]
    assert checked_svc(
        service(workloads_pb2.ServicePort(port=80), workloads_pb2.ServicePort(name="b", port=81))
    ) == [("spec.ports[0].name", "is required when the service has more than one port")]
    both = workloads_pb2.ServicePort(port=80, target_port=8080, target_port_name="web")
    assert checked_svc(service(both)) == [
        ("spec.ports[0].targetPort", "must be a port number or a container port name, not both")
    ]
    long_name = workloads_pb2.ServicePort(port=80, target_port_name="a-very-long-port-name")
    assert checked_svc(service(long_name)) == [
        (
            "spec.ports[0].targetPort",
            "'a-very-long-port-name' must be a container port's name: at most 15 of [a-z0-9-]",
        )
    ]
    udp_and_tcp = (
        workloads_pb2.ServicePort(name="dns-tcp", port=53),
        workloads_pb2.ServicePort(name="dns-udp", port=53, protocol=meta_pb2.PROTOCOL_UDP),
    )
    assert checked_svc(service(*udp_and_tcp)) == []


def test_service_addresses_and_names() -> None:
    assert checked_svc(service(cluster_ip="None")) == []  # headless
    assert checked_svc(service(cluster_ip="fd00::1")) == [
        (
            "spec.clusterIP",
            "'fd00::1' must be empty (allocated), None (a headless service) or an IPv4 address",
        )
    ]
    assert checked_svc(service(external_ips=["192.168.2.15", "192.168.2.15", "224.0.0.1"])) == [
        ("spec.externalIPs[1]", "192.168.2.15 is listed twice"),
        (
            "spec.externalIPs[2]",
            "224.0.0.1 cannot be an external IP (unspecified, loopback, link-local or multicast)",
        ),
    ]
    svc = service()
    svc.metadata.name = "x" * 64
    assert checked_svc(svc) == [("metadata.name", "must be no more than 63 characters, got 64")]
    assert checked_svc(service(selector={"bad key!": "x"})) == [
        ("spec.selector[bad key!]", "invalid label key 'bad key!'")
    ]


# ------------------------------------------------------------------ endpoints and events


def test_endpoints() -> None:
    ep = workloads_pb2.Endpoints(
        metadata=meta_pb2.ObjectMeta(name="frontend"),
        subsets=[
            workloads_pb2.EndpointSubset(
                addresses=[
                    workloads_pb2.EndpointAddress(ip="10.244.1.5", target_ref=workloads_pb2.ObjectReference())
                ],
                not_ready_addresses=[workloads_pb2.EndpointAddress(ip="nope", node_name="Minion_1")],
                ports=[
                    workloads_pb2.EndpointPort(name="http", port=80),
                    workloads_pb2.EndpointPort(name="http", port=81),
                ],
            )
        ],
    )
    validation.default_endpoints(ep)
    assert ep.subsets[0].ports[0].protocol == meta_pb2.PROTOCOL_TCP
    assert [f for f, _ in validation.validate_endpoints(ep).items] == [
        "subsets[0].addresses[0].targetRef",
        "subsets[0].notReadyAddresses[0].ip",
        "subsets[0].notReadyAddresses[0].nodeName",
        "subsets[0].ports[1].name",
    ]


def test_events_as_the_recorder_writes_them_are_valid() -> None:
    # Events about nodes live in "default" with no namespace in the reference.
    ev = workloads_pb2.Event(
        metadata=meta_pb2.ObjectMeta(name="10.0.0.5.1a2b3c", namespace="default"),
        involved_object=workloads_pb2.ObjectReference(kind="Node", name="10.0.0.5"),
        reason="NodeReady",
        type="Normal",
        count=1,
    )
    assert validation.validate_event(ev).items == []
    bare = workloads_pb2.Event(metadata=meta_pb2.ObjectMeta(name="e"))
    validation.default_event(bare)
    assert (bare.metadata.namespace, bare.type, bare.count) == ("default", "Normal", 1)
    assert validation.validate_event(bare).items == [
        ("involvedObject.kind", "is required"),
        ("involvedObject.name", "is required"),
    ]
    ev.count = -1
    ev.type = "Error"
    assert validation.validate_event(ev).items == [
        ("type", 'must be "Normal" or "Warning", got \'Error\''),
        ("count", "must not be negative, got -1"),
    ]
