"""`coordinator provision` / `deprovision`: Atoll hosts as OpenStack servers, from the operator's CLI.

The CLI talks to the cloud with the operator's clouds.yaml entry (``--os-cloud``)
and to the coordinator for join tokens, the CA pin and Machine records; see
coordinator.cli.provisioning.servers for the idempotency rules.

Output: a progress line per server per change, with the time since the
command started (``  12.3s  atomic-2  BUILD (spawning)``), then one result
line per server. Under ``-o json`` nothing but the JSON result is printed.
The exit status is 1 when any server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from atoll import config as layered
from atoll import errors
from atoll.agentconfig import DEFAULT_AGENT_PORT as AGENT_PORT
from atoll.v1 import machines_pb2
from atoll.validation import VXLAN_PORT
from coordinator.cli import enroll as enroll_cli
from coordinator.cli.provisioning import tokens
from coordinator.cli.provisioning.machines import MACHINE, ApiRecorder
from coordinator.cli.provisioning.openstack import OpenStackCloud, is_cloud_error
from coordinator.cli.provisioning.servers import PROVIDER, Outcome, Provisioner, Request, ServerResult
from coordinator.client.api import Client


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="boot Atoll hosts as OpenStack servers (idempotent; --ensure N scales the set)",
        description="Ensure the hosts' security group (agent API, overlay VXLAN between members, ICMP, "
        "egress to the coordinator), the keypair and the image, boot servers PREFIX-1..N with cloud-init "
        "user-data carrying a join token and the CA pin, wait for ACTIVE, attach floating IPs and record "
        "them as Machines. Re-running creates nothing new.",
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--count", type=int, help="at least N servers in the set (never removes any)")
    size.add_argument("--ensure", type=int, help="exactly N servers: create or remove (highest index first)")
    p.add_argument("--flavor", required=True, help="Nova flavor name or id")
    p.add_argument("--image", required=True, help="Glance image name or id")
    p.add_argument("--network", required=True, help="Neutron network the servers attach to")
    p.add_argument(
        "--name-prefix", default="atomic", help="the set's name: servers are PREFIX-1.. (default atomic)"
    )
    p.add_argument("--floating-ip-pool", default="", help="external network to take floating IPs from")
    p.add_argument("--key-name", default="", help="Nova keypair for the servers")
    p.add_argument("--public-key-file", default="", help="create --key-name from this public key if missing")
    p.add_argument("--image-file", default="", help="upload this file as --image when Glance has none")
    p.add_argument("--labels", "-l", action="append", default=[], help="node labels k=v[,k=v] (repeat)")
    p.add_argument(
        "--security-group", default="atoll-hosts", help="security group name (default atoll-hosts)"
    )
    p.add_argument("--agent-port", type=int, default=AGENT_PORT, help="agents' gRPC port (default 10250)")
    p.add_argument("--vxlan-port", type=int, default=VXLAN_PORT, help="overlay VXLAN UDP port (default 8472)")
    p.add_argument(
        "--coordinator-address",
        default="",
        help="HOST:PORT the hosts' agents dial (default: the address the coordinator advertises)",
    )
    p.add_argument(
        "--join-address",
        default="",
        help="HOST:PORT of the coordinator's token port (default: the advertised one)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for ACTIVE (default 900)")
    p.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--output", "-o", choices=["json"], help="print the result as JSON (no progress lines)")
    _cloud_flag(p)

    d = sub.add_parser(
        "deprovision",
        help="delete provisioned servers, their floating IPs, join tokens and Machine records",
    )
    d.add_argument("names", nargs="*", help="server names")
    d.add_argument("--all-from", default="", metavar="PREFIX", help="every server of the set PREFIX")
    d.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for deletion")
    d.add_argument("--output", "-o", choices=["json"], help="print the result as JSON")
    _cloud_flag(d)


def _cloud_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--os-cloud", default=os.environ.get("OS_CLOUD", ""), help="clouds.yaml entry ($OS_CLOUD)")


class ServerRecorder(ApiRecorder):
    """Machine records of provisioned servers; a set's records are found by their `prefix` detail."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, provider=PROVIDER)

    async def names(self, prefix: str) -> list[str]:
        items, _ = await self.client.list(MACHINE)
        return sorted(
            m.metadata.name
            for m in items
            if isinstance(m, machines_pb2.Machine)
            and m.spec.provider == PROVIDER
            and m.spec.details.get("prefix") == prefix
        )


class Printer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def progress(self, name: str, text: str, elapsed: float) -> None:
        if not self.quiet:
            print(f"{elapsed:7.1f}s  {name}  {text}", flush=True)

    def outcome(self, outcome: Outcome) -> None:
        if self.quiet:
            print(json.dumps(outcome.to_dict(), indent=2))
            return
        for r in (*outcome.removed, *outcome.servers):
            if r.error:
                print(f"{r.name}: FAILED: {r.error}", file=sys.stderr, flush=True)
            elif r.action == "gone":
                print(f"{r.name}: already gone", flush=True)
            else:
                print(f"{r.name}: {r.action} {_summary(r)}", flush=True)


def _summary(r: ServerResult) -> str:
    parts = [r.status]
    if r.addresses:
        parts.append(",".join(r.addresses))
    if r.floating_ip:
        parts.append(f"floating IP {r.floating_ip}")
    if r.token_id:
        parts.append(f"join token {r.token_id}")
    return "; ".join(parts)


def _request(args: argparse.Namespace, coordinator: str, join: str) -> Request:
    count = args.ensure if args.ensure is not None else args.count
    if count < 0:
        raise errors.InvalidArgument("the server count must not be negative")
    labels: dict[str, str] = {}
    for item in args.labels:
        labels.update(layered.parse_labels(item))
    return Request(
        cloud=args.os_cloud,
        prefix=args.name_prefix,
        count=count,
        exact=args.ensure is not None,
        flavor=args.flavor,
        image=args.image,
        network=args.network,
        coordinator=coordinator,
        join_address=join,
        floating_ip_pool=args.floating_ip_pool,
        key_name=args.key_name,
        public_key_file=args.public_key_file,
        image_file=args.image_file,
        labels=labels,
        security_group=args.security_group,
        agent_port=args.agent_port,
        vxlan_port=args.vxlan_port,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
    )


async def _connect(args: argparse.Namespace) -> OpenStackCloud:
    if not args.os_cloud:
        raise errors.InvalidArgument("--os-cloud (or $OS_CLOUD) is needed: the clouds.yaml entry to use")
    return await asyncio.to_thread(OpenStackCloud.connect, args.os_cloud)


async def cmd_provision(client: Client, args: argparse.Namespace) -> int:
    coordinator, join = await enroll_cli._addresses(client, args, deploying=True)
    request = _request(args, coordinator, join)
    printer = Printer(quiet=args.output == "json")
    try:
        cloud = await _connect(args)
        provisioner = Provisioner(
            cloud, tokens.ApiTokenIssuer(client), ServerRecorder(client), progress=printer.progress
        )
        outcome = await provisioner.provision(request)
    except Exception as exc:
        if not is_cloud_error(exc):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    printer.outcome(outcome)
    return 0 if outcome.ok else 1


async def cmd_deprovision(client: Client, args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.all_from):
        raise errors.InvalidArgument("deprovision needs server NAMEs or --all-from PREFIX (not both)")
    printer = Printer(quiet=args.output == "json")
    try:
        cloud = await _connect(args)
        provisioner = Provisioner(
            cloud, tokens.ApiTokenIssuer(client), ServerRecorder(client), progress=printer.progress
        )
        outcome = await provisioner.deprovision(args.names, args.all_from, args.timeout)
    except Exception as exc:
        if not is_cloud_error(exc):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    printer.outcome(outcome)
    return 0 if outcome.ok else 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


COMMANDS = {"provision": cmd_provision, "deprovision": cmd_deprovision}
