"""Sandbox networks the agent builds itself: who gets one, which address, and when it is plumbed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.network.sandbox import (
    RecordingPlumber,
    SandboxIpam,
    SandboxNetworks,
    agent_share,
    engine_share,
    host_ifname,
)
from agent.network.veth import mac_of
from agent.pods import render
from agent.pods.events import RecordingRecorder
from agent.pods.state import PodStateStore
from agent.pods.syncer import PodSyncer
from agent.runtime.base import BridgeNetwork, PodNetworkSpec, RuntimeError_
from agent.runtime.docker import DockerRuntime, bridge_network_of
from agent.runtime.fake import FakeRuntime
from atoll import errors, validation
from atoll.v1 import pod_pb2

NET = BridgeNetwork("pods", "10.1.2.0/24", "10.1.2.1", "10.1.2.0/25", "atoll0", 1450)


def test_the_agent_takes_the_subnet_outside_the_engine_range_highest_first() -> None:
    share = agent_share(NET)
    assert [str(a) for a in share[:2]] == ["10.1.2.254", "10.1.2.253"]
    assert str(share[-1]) == "10.1.2.128" and len(share) == 127
    # No range, or a range that is the whole subnet, leaves the agent nothing.
    for ip_range in ("", "10.1.2.0/24"):
        assert agent_share(BridgeNetwork("p", "10.1.2.0/24", "10.1.2.1", ip_range, "b", 1500)) == ()
    # The gateway is never handed out, wherever it sits.
    high_gateway = BridgeNetwork("p", "10.1.2.0/24", "10.1.2.254", "10.1.2.0/25", "b", 1500)
    assert str(agent_share(high_gateway)[0]) == "10.1.2.253"
    assert engine_share("10.1.2.0/24") == "10.1.2.0/25"
    assert engine_share("10.1.2.0/30") == ""


def test_host_ends_are_stable_per_sandbox_and_fit_ifnamsiz() -> None:
    name = host_ifname("a" * 64)
    assert name == host_ifname("a" * 64) and len(name) <= 15 and name != host_ifname("b" * 64)


def test_a_pod_keeps_its_address_and_a_restart_remembers_it(tmp_path: Path) -> None:
    ipam = SandboxIpam(tmp_path)
    a, b = ipam.address(NET, "uid-a"), ipam.address(NET, "uid-b")
    assert (a, b) == ("10.1.2.254/24", "10.1.2.253/24")
    assert ipam.address(NET, "uid-a") == a
    again = SandboxIpam(tmp_path)
    assert again.address(NET, "uid-a") == a and again.address(NET, "uid-c") == "10.1.2.252/24"
    again.release("uid-a")
    assert SandboxIpam(tmp_path).address(NET, "uid-d") == "10.1.2.254/24"
    # Pods gone while the agent was away give their addresses back.
    assert again.retain(lambda uid: uid == "uid-b") == ["uid-c"]
    assert SandboxIpam(tmp_path).held("uid-c") == {}


def test_a_new_subnet_gives_a_new_address_and_a_full_share_says_so(tmp_path: Path) -> None:
    ipam = SandboxIpam(tmp_path)
    ipam.address(NET, "uid-a")
    moved = BridgeNetwork("pods", "10.9.9.0/24", "10.9.9.1", "10.9.9.0/25", "atoll0", 1450)
    assert ipam.address(moved, "uid-a") == "10.9.9.254/24"
    assert ipam.held("uid-a") == {"pods": "10.9.9.254"}
    tiny = BridgeNetwork("tiny", "10.3.0.0/29", "10.3.0.1", "10.3.0.0/30", "b", 1500)
    assert [ipam.address(tiny, f"u{i}") for i in range(3)] == ["10.3.0.6/29", "10.3.0.5/29", "10.3.0.4/29"]
    with pytest.raises(errors.ResourceExhausted, match="no free address"):
        ipam.address(tiny, "u3")


def test_an_unreadable_ipam_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "sandbox" / "ipam.json"
    path.parent.mkdir()
    path.write_text("{not json")
    assert SandboxIpam(tmp_path).address(NET, "uid-a") == "10.1.2.254/24"
    assert (tmp_path / "sandbox" / "ipam.unreadable").exists()


def _pod(name: str = "web", *, host_port: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.uid, p.metadata.namespace = name, f"uid-{name}", "default"
    c = p.spec.containers.add(name="web", image="busybox")
    c.ports.add(container_port=80, host_port=host_port)  # a port without a host port changes nothing
    validation.default_pod(p)
    return p


class Bed:
    def __init__(self, tmp_path: Path, *, ip_range: str = "10.1.2.0/25", mode: bool = True) -> None:
        self.tmp_path = tmp_path
        self.rt = FakeRuntime(images=("atoll/pause:1.0", "busybox"))
        self.plumber = RecordingPlumber()
        self.recorder = RecordingRecorder()
        self.spec = PodNetworkSpec("pods", "10.1.2.0/24", "10.1.2.1", 1450, "atoll0", ip_range=ip_range)
        self.mode = mode
        self.syncer = self.new_syncer()

    def new_syncer(self) -> PodSyncer:
        """An agent (re)started on the same state dir and engine."""
        ctx = render.RenderContext(
            node_name="n1", infra_image="atoll/pause:1.0", pod_network="pods", pods_dir=self.tmp_path / "pods"
        )
        states = PodStateStore(self.tmp_path / "pods")
        states.load_all()
        nets = SandboxNetworks(self.plumber, SandboxIpam(self.tmp_path), self.rt.bridge_network)
        return PodSyncer(
            self.rt,
            states,
            ctx,
            host_ip=lambda: "192.168.0.10",
            recorder=self.recorder,
            sandboxes=nets,
            build_sandbox_networks=self.mode,
        )

    async def start(self) -> Bed:
        await self.rt.ensure_network(self.spec)
        return self

    def infra(self) -> list[str]:
        return [cid for cid, s in self.rt.specs.items() if s.labels[render.LABEL_CONTAINER] == render.INFRA]


async def test_a_pod_gets_the_agents_network_before_its_app_starts(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    result = await bed.syncer.sync(_pod())
    (infra,) = bed.infra()
    spec = bed.rt.specs[infra]
    assert spec.network == "none" and spec.labels[render.LABEL_SANDBOX_NETWORK] == "pods"
    assert spec.extra_hosts == (("web", "10.1.2.254"),)  # /etc/hosts names the pod, as the engine's would
    (plumbing,) = bed.plumber.plumbed
    assert (plumbing.netns, plumbing.bridge, plumbing.address, plumbing.gateway, plumbing.mtu) == (
        f"/run/docker/netns/{infra[:12]}",  # the engine's bound namespace, not one found by pid
        "atoll0",
        "10.1.2.254/24",
        "10.1.2.1",
        1450,
    )
    assert plumbing.host_ifname == host_ifname(infra)
    # Plumbed between the sandbox's start and the app container's creation.
    calls = [c for c, _ in bed.rt.calls]
    first_app = calls.index("create_container", calls.index("network_namespace"))
    assert calls.index("start_container") < calls.index("network_namespace") < first_app
    assert result.status.pod_ip == "10.1.2.254"
    assert result.status.phase == pod_pb2.POD_PHASE_RUNNING
    # A second sync (and a restarted agent) finds it plumbed: nothing is built again.
    await bed.syncer.sync(_pod())
    again = await bed.new_syncer().sync(_pod())
    assert len(bed.plumber.plumbed) == 1 and again.status.pod_ip == "10.1.2.254"


async def test_host_ports_and_networks_without_a_range_keep_the_engines_network(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod("published", host_port=8080))
    bed2 = await Bed(tmp_path / "norange", ip_range="").start()
    await bed2.syncer.sync(_pod("plain"))
    bed3 = await Bed(tmp_path / "off", mode=False).start()
    await bed3.syncer.sync(_pod("off"))
    for b in (bed, bed2, bed3):
        (infra,) = b.infra()
        assert b.rt.specs[infra].network == "pods"
        assert render.LABEL_SANDBOX_NETWORK not in b.rt.specs[infra].labels
        assert b.plumber.plumbed == []
    assert bed.rt.specs[bed.infra()[0]].ports[0].host_port == 8080


async def test_a_failed_plumbing_removes_the_sandbox_and_is_retried(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    bed.plumber.fail = errors.Unavailable("no bridge atoll0")
    result = await bed.syncer.sync(_pod())
    assert bed.rt.containers == {}  # the sandbox went; no app container was made
    assert "FailedCreatePodSandBox" in bed.recorder.reasons()
    assert result.status.pod_ip == "" and result.requeue_at is not None
    bed.plumber.fail = None
    bed.syncer.clock = lambda: result.requeue_at or 0.0
    result = await bed.syncer.sync(_pod())
    assert result.status.pod_ip == "10.1.2.254" and len(bed.infra()) == 2


async def test_a_sandbox_left_unplumbed_by_a_crash_is_plumbed_on_the_next_sync(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod())
    record = bed.syncer.states.get("uid-web")
    record.sandbox_plumbed = ""  # as if the agent died between the sandbox's start and the plumbing
    bed.syncer.states.save(record)
    bed.plumber.fail = errors.Unavailable("netlink busy")
    failed = await bed.new_syncer().sync(_pod())
    assert failed.status.pod_ip == "" and failed.requeue_at is not None
    assert "FailedSetUpNetwork" in bed.recorder.reasons()
    bed.plumber.fail = None
    creates = len(bed.rt.calls_of("create_container"))
    fixed = await bed.new_syncer().sync(_pod())
    assert fixed.status.pod_ip == "10.1.2.254" and len(bed.plumber.plumbed) == 2
    assert len(bed.rt.calls_of("create_container")) == creates  # nothing was recreated


async def test_removing_a_pod_gives_its_address_back(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod("a"))
    await bed.syncer.remove("uid-a")
    await bed.syncer.sync(_pod("b"))
    assert [p.address for p in bed.plumber.plumbed] == ["10.1.2.254/24", "10.1.2.254/24"]


async def test_a_finished_pod_gives_its_address_back_once_its_sandbox_stopped(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    job = _pod("job")
    job.spec.restart_policy = pod_pb2.RESTART_POLICY_NEVER
    await bed.syncer.sync(job)
    app = next(cid for cid, s in bed.rt.specs.items() if s.labels[render.LABEL_CONTAINER] == "web")
    bed.rt.exit(app, 0)

    async def cannot_stop(container_id: str, grace_seconds: int | None) -> None:
        raise RuntimeError_("engine busy")

    real_stop = bed.rt.stop_container
    bed.rt.stop_container = cannot_stop  # type: ignore[method-assign]
    assert (await bed.syncer.sync(job)).terminal
    # Its sandbox still runs (and holds the veth): the address stays the job's.
    assert bed.syncer.sandboxes is not None and bed.syncer.sandboxes.ipam.held("uid-job")
    bed.rt.stop_container = real_stop  # type: ignore[method-assign]
    assert (await bed.syncer.sync(job)).terminal
    assert bed.syncer.sandboxes.ipam.held("uid-job") == {}
    record = bed.syncer.states.get("uid-job")
    assert (record.sandbox_network, record.sandbox_address, record.sandbox_plumbed) == ("", "", "")
    # A restarted agent adopts nothing for it, and the next pod gets the address.
    bed.syncer = bed.new_syncer()
    assert bed.syncer.sandboxes is not None and bed.syncer.sandboxes.ipam.held("uid-job") == {}
    await bed.syncer.sync(_pod("next"))
    assert [p.address for p in bed.plumber.plumbed] == ["10.1.2.254/24", "10.1.2.254/24"]


async def test_a_new_sandbox_is_refused_the_address_while_the_old_one_runs(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod())
    (old,) = bed.infra()

    async def cannot_stop(container_id: str, grace_seconds: int | None) -> None:
        raise RuntimeError_("engine busy")

    bed.rt.stop_container = cannot_stop  # type: ignore[method-assign]
    changed = _pod()
    changed.spec.hostname = "renamed"  # a new sandbox spec: the old sandbox is replaced
    result = await bed.syncer.sync(changed)
    assert bed.infra() == [old] and len(bed.plumber.plumbed) == 1
    assert "previous sandbox still runs" in bed.syncer.states.get("uid-web").sandbox_error
    assert bed.recorder.reasons().count("FailedCreatePodSandBox") == 1 and result.requeue_at is not None


async def test_a_full_share_sends_new_pods_to_the_engines_network(tmp_path: Path) -> None:
    bed = Bed(tmp_path, ip_range="10.1.2.0/25")
    bed.spec = PodNetworkSpec("pods", "10.1.2.0/29", "10.1.2.1", 1450, "atoll0", ip_range="10.1.2.0/30")
    await bed.start()
    for name in ("a", "b", "c", "d"):
        await bed.syncer.sync(_pod(name))
    networks = sorted(bed.rt.specs[cid].network or "" for cid in bed.infra())
    assert networks == ["none", "none", "none", "pods"]  # three addresses (.4 to .6), then the engine


async def test_the_engine_network_is_in_use_while_the_agent_plumbed_sandboxes_onto_it(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod())
    moved = PodNetworkSpec("pods", "10.9.9.0/24", "10.9.9.1", 1450, "atoll0", ip_range="10.9.9.0/25")
    assert await bed.rt.ensure_network(moved) == "in-use-mismatch"
    # Sandbox networks switched off (or on) while pods use it: the range alone never remakes it.
    no_range = PodNetworkSpec("pods", "10.1.2.0/24", "10.1.2.1", 1450, "atoll0")
    assert await bed.rt.ensure_network(no_range) == "unchanged"


def test_addresses_come_back_from_the_pods_records(tmp_path: Path) -> None:
    ipam = SandboxIpam(tmp_path)
    assert ipam.adopt([("uid-a", "pods", "10.1.2.250/24"), ("uid-b", "pods", "10.1.2.254/24")]) == 2
    assert ipam.adopt([("uid-a", "pods", "10.1.2.250/24")]) == 0
    assert SandboxIpam(tmp_path).address(NET, "uid-c") == "10.1.2.253/24"
    assert ipam.address(NET, "uid-a") == "10.1.2.250/24"


def test_engine_networks_as_the_agent_reads_them() -> None:
    data = {
        "Name": "pods",
        "Id": "0123456789abcdef",
        "Driver": "bridge",
        "Options": {},
        "IPAM": {
            "Config": [
                {"Subnet": "fd00::/64"},
                {
                    "Subnet": "10.1.2.0/24",
                    "Gateway": "10.1.2.1",
                    "IPRange": "10.1.2.0/25",
                    "AuxiliaryAddresses": {"router": "10.1.2.254"},
                },
            ]
        },
    }
    net = bridge_network_of(data)
    assert net == BridgeNetwork(
        "pods", "10.1.2.0/24", "10.1.2.1", "10.1.2.0/25", "br-0123456789ab", 1500, ("10.1.2.254",)
    )
    assert str(agent_share(net)[0]) == "10.1.2.253"  # the engine's auxiliary address is left alone
    assert bridge_network_of({**data, "Driver": "macvlan"}) is None
    no_gateway = {**data, "IPAM": {"Config": [{"Subnet": "10.1.2.0/24", "IPRange": "10.1.2.0/25"}]}}
    nowhere = bridge_network_of(no_gateway)
    assert nowhere is not None and agent_share(nowhere) == ()
    spec = PodNetworkSpec("pods", "10.1.2.0/24", "10.1.2.1", 1500, "br-0123456789ab", ip_range="10.1.2.0/25")
    inspected = {**data, "Options": {"com.docker.network.driver.mtu": "1500",
                 "com.docker.network.bridge.name": "br-0123456789ab",
                 "com.docker.network.bridge.enable_ip_masquerade": "false"},
                 "IPAM": {"Config": [{"Subnet": "10.1.2.0/24", "Gateway": "10.1.2.1"}]}}  # fmt: skip
    assert DockerRuntime.network_mismatch(inspected, spec) == [
        "subnet/gateway/range [('10.1.2.0/24', '10.1.2.1', '')] (want [('10.1.2.0/24', '10.1.2.1', '10.1.2.0/25')])"
    ]


def test_a_pods_mac_follows_its_address() -> None:
    assert mac_of("10.1.2.254/24") == "02:42:0a:01:02:fe"


async def test_auto_takes_only_the_agents_own_networks_and_gives_up_on_a_host_it_cannot_reach(
    tmp_path: Path,
) -> None:
    managed = BridgeNetwork("atoll", "10.1.2.0/24", "10.1.2.1", "10.1.2.0/25", "atoll0", 1450, managed=True)
    theirs = BridgeNetwork("ops", "10.7.0.0/24", "10.7.0.1", "10.7.0.0/25", "br-ops", 1500)
    found = {n.name: n for n in (managed, theirs)}

    async def inspect(name: str) -> BridgeNetwork | None:
        return found.get(name)

    plumber = RecordingPlumber()
    auto = SandboxNetworks(plumber, SandboxIpam(tmp_path / "a"), inspect, explicit=False)
    explicit = SandboxNetworks(plumber, SandboxIpam(tmp_path / "b"), inspect, explicit=True)
    assert await auto.network("ops") is None and await explicit.network("ops") == theirs
    assert await auto.network("atoll") == managed
    # The namespaces are out of reach (an engine elsewhere): auto hands pods to the engine from then on.
    plumber.fail = errors.FailedPrecondition("cannot open the sandbox's network namespace")
    for nets in (auto, explicit):
        with pytest.raises(errors.FailedPrecondition):
            await nets.plumb(managed, "c" * 64, "/run/docker/netns/x", "10.1.2.254/24")
    auto.forget_network("atoll")
    assert await auto.network("atoll") is None and auto.unusable
    assert await explicit.network("atoll") == managed  # said so explicitly: it keeps trying


async def test_no_app_container_starts_in_a_sandbox_that_is_not_plumbed(tmp_path: Path) -> None:
    bed = await Bed(tmp_path).start()
    await bed.syncer.sync(_pod())
    (app,) = [cid for cid, s in bed.rt.specs.items() if s.labels[render.LABEL_CONTAINER] == "web"]
    record = bed.syncer.states.get("uid-web")
    record.sandbox_plumbed = ""  # the agent stopped between the sandbox's start and its plumbing
    bed.syncer.states.save(record)
    bed.rt.exit(app, 1)  # and the app container must restart
    bed.plumber.fail = errors.Unavailable("netlink busy")
    syncer = bed.new_syncer()
    starts = len(bed.rt.calls_of("start_container"))
    await syncer.sync(_pod())
    assert len(bed.rt.calls_of("start_container")) == starts  # held until the network is there
    bed.plumber.fail = None
    syncer.clock = lambda: 2e9
    result = await syncer.sync(_pod())
    assert len(bed.rt.calls_of("start_container")) == starts + 1 and result.status.pod_ip == "10.1.2.254"
