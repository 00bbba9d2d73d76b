"""Hosts join the test bed's cluster like an operator's would: `coordinator token create`, then
`atoll-agent --join-token --ca-hash`; mutual TLS from then on, logs included."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable

from atoll import pki
from tests.integration.cluster import pinned_pod, start_cluster
from tests.integration.daemons import AgentProcess, cli, eventually, node_ready, wait_running
from tests.integration.testbed import TestBed


async def _exits(agent: AgentProcess, timeout: float = 30) -> str:
    assert agent.process is not None
    code = await asyncio.to_thread(agent.process.wait, timeout)
    assert code != 0
    return agent.process.read_log()


async def test_agents_join_with_a_token_and_the_ca_hash(testbed_factory: Callable[..., TestBed]) -> None:
    cluster = await start_cluster(testbed_factory, 2, overlay=False)
    server = cluster.coordinator.server
    try:
        # Both agents joined with the token the CLI made: a key only they can read, a node certificate.
        for i in range(2):
            pki_dir = cluster.workers[i].dir / "agent" / "pki"
            assert stat.S_IMODE((pki_dir / "node.key").stat().st_mode) == 0o600
            cert = pki.load_cert((pki_dir / "node.crt").read_bytes())
            assert pki.subject_cn(cert) == cluster.node(i)
            assert pki.subject_orgs(cert) == ("atoll:nodes",)
        tokens = json.loads(cli(server, "token", "list", "-o", "json").stdout)
        assert len(tokens) == 1 and sorted(tokens[0]["joinedNodes"]) == ["node-0", "node-1"]

        # Logs travel coordinator -> agent over mutual TLS.
        await cluster.client.create(pinned_pod("web", "node-0"))
        await wait_running(cluster.client, "web")
        logs = await asyncio.to_thread(cli, server, "logs", "web")
        assert logs.returncode == 0, logs.stderr

        # Revoked token: a restarted agent still comes back, on its stored certificate.
        assert cli(server, "token", "revoke", tokens[0]["id"]).returncode == 0
        cluster.kill_agent(0)
        restarted = await cluster.start_agent(0)
        assert restarted.process is not None

        async def registered() -> str:
            assert restarted.process is not None
            return "registered node" in restarted.process.read_log() and restarted.process.read_log()

        log = await eventually(registered, what="the restarted agent registered")
        assert "joined the cluster" not in log

        # A new host with the revoked token is refused, saying why.
        revoked = cluster.agent_for(1, ("--state-dir", str(cluster.workers[1].dir / "intruder")))
        revoked.name = "intruder"
        revoked.start()
        assert "has been revoked" in await _exits(revoked)

        # A wrong pin: the agent refuses the coordinator before sending its token anywhere.
        fresh = cluster.coordinator.create_token("--ttl", "10m", "--uses", "1")
        wrong = AgentProcess(
            cluster.workers[1],
            f"{cluster.master.ip}:6443",
            cluster.workers[1].dir / "intruder2",
            "intruder2",
            ("--join-token", fresh["token"], "--ca-hash", "sha256:" + "0" * 64),
        ).start()
        assert "presented no CA matching" in await _exits(wrong)
        assert not await node_ready(cluster.client, "intruder2")
        await eventually(lambda: node_ready(cluster.client, "node-0"), what="node-0 Ready")
    finally:
        await cluster.close()
