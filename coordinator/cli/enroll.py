"""`coordinator enroll` / `coordinator unenroll`: bare metal through Ironic, from the operator's CLI.

The CLI talks to Ironic with the operator's credentials (clouds.yaml via
``--os-cloud``, or ``--ironic-url`` with noauth, http_basic or keystone) and to
the coordinator for join tokens and Machine records; see
coordinator.cli.provisioning.enroll for why the coordinator does not drive Ironic.

Output: one progress line per node per state transition, with the time since
that node's enrollment started, then one result line per node. Under ``-o
json`` nothing but the JSON result is printed. The exit status is 1 when any
node failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from atoll import errors
from coordinator.cli.provisioning import enroll, inventory, ironic, tokens
from coordinator.cli.provisioning.enroll import Enroller, EnrollSpec, Options, Result, Transition
from coordinator.cli.provisioning.machines import ApiRecorder
from coordinator.client.api import Client

DEFAULT_PARALLEL = 4


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "enroll",
        help="enroll bare-metal hosts through Ironic and deploy them with the agent",
        description="Create the Ironic node (BMC credentials, one port per MAC), manage, inspect when "
        "the driver can, provide (clean), and with --image deploy it with cloud-init user-data that "
        "installs the agent's config (coordinator address, join token, CA pin, labels, SR-IOV PFs).",
    )
    p.add_argument("name", nargs="?", help="host name (also the Ironic node name and the Atoll node name)")
    p.add_argument(
        "--filename", "-f", help="inventory file (YAML or JSON) of many hosts; flags act as defaults"
    )
    p.add_argument("--driver", choices=enroll.DRIVERS, help="Ironic hardware type")
    p.add_argument(
        "--bmc", default="", help="BMC address (ipmi: host; redfish: https://host[/redfish/v1/Systems/ID])"
    )
    p.add_argument("--bmc-user", default="", help="BMC user name")
    p.add_argument(
        "--bmc-password-file", default="", help="file holding the BMC password (never a flag value)"
    )
    p.add_argument(
        "--mac", action="append", default=[], help="MAC address of a NIC to create a port for (repeat)"
    )
    p.add_argument("--image", default="", help="image URL to deploy (without it the node is left available)")
    p.add_argument("--image-checksum", default="", help="sha256:HEX, sha512:HEX, md5:HEX or a checksum URL")
    p.add_argument("--root-gb", type=int, default=None, help="root partition size in GiB (default 10)")
    p.add_argument("--property", action="append", default=[], help="node property k=v, e.g. cpus=32 (repeat)")
    p.add_argument(
        "--interface", action="append", default=[], help="Ironic interface kind=name, e.g. deploy=direct"
    )
    p.add_argument(
        "--sriov-pf", action="append", default=[], help="SR-IOV PF IFACE:NUM_VFS for the agent (repeat)"
    )
    p.add_argument("--labels", "-l", action="append", default=[], help="node labels k=v[,k=v] (repeat)")
    p.add_argument(
        "--add-host", action="append", default=[], help="/etc/hosts entry NAME:IP, for sites without DNS"
    )
    p.add_argument(
        "--coordinator-address",
        default="",
        help="HOST:PORT the host's agent dials (default: the address the coordinator advertises)",
    )
    p.add_argument(
        "--join-address",
        default="",
        help="HOST:PORT of the coordinator's token port the agent joins through (default: the advertised one)",
    )
    p.add_argument(
        "--wait", action="store_true", help="after `active`, wait until the agent joins as a Ready node"
    )
    p.add_argument("--retry", action="store_true", help="resume a node left in a failed state")
    p.add_argument(
        "--parallel", type=int, default=DEFAULT_PARALLEL, help="hosts enrolled at once (default 4)"
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds the Ironic part may take per host")
    p.add_argument("--join-timeout", type=float, default=900.0, help="seconds --wait waits for the agent")
    p.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--output", "-o", choices=["json"], help="print the results as JSON (no progress lines)")
    add_ironic_flags(p)

    u = sub.add_parser(
        "unenroll", help="undeploy and delete a bare-metal host, revoke its join token, remove its node"
    )
    u.add_argument("names", nargs="+", help="host names")
    u.add_argument("--timeout", type=float, default=3600.0, help="seconds the tear-down may take per host")
    u.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    u.add_argument("--output", "-o", choices=["json"], help="print the results as JSON")
    add_ironic_flags(u)


def add_ironic_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ironic")
    g.add_argument("--os-cloud", default=os.environ.get("OS_CLOUD", ""), help="clouds.yaml entry ($OS_CLOUD)")
    g.add_argument(
        "--ironic-url", default=os.environ.get("IRONIC_URL", ""), help="Ironic endpoint ($IRONIC_URL)"
    )
    g.add_argument("--ironic-auth", choices=ironic.AUTH_TYPES, default="noauth", help="with --ironic-url")
    g.add_argument("--ironic-user", default="", help="http_basic user")
    g.add_argument("--ironic-password-file", default="", help="http_basic password file")


def ironic_auth(args: argparse.Namespace) -> ironic.IronicAuth:
    password = ironic.Secret("")
    if args.ironic_password_file:
        password = inventory.read_secret_file(args.ironic_password_file, "--ironic-password-file")
    return ironic.IronicAuth(
        cloud=args.os_cloud if not args.ironic_url else "",
        url=args.ironic_url,
        auth=args.ironic_auth,
        username=args.ironic_user,
        password=password,
    )


def _flag_entry(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as inventory keys; only what was given, so a file's values are not overridden by defaults."""
    entry: dict[str, Any] = {
        "driver": args.driver,
        "bmc": args.bmc,
        "bmcUser": args.bmc_user,
        "bmcPasswordFile": args.bmc_password_file,
        "macs": args.mac,
        "image": args.image,
        "imageChecksum": args.image_checksum,
        "rootGB": args.root_gb,
        "properties": args.property,
        "interfaces": args.interface,
        "sriovPFs": args.sriov_pf,
        "labels": args.labels,
        "addHosts": args.add_host,
    }
    return {k: v for k, v in entry.items() if v not in (None, "", [])}


def specs_of(args: argparse.Namespace) -> list[EnrollSpec]:
    if bool(args.name) == bool(args.filename):
        raise errors.InvalidArgument("enroll needs a host NAME with flags, or -f INVENTORY (not both)")
    flags = _flag_entry(args)
    if args.filename:
        return inventory.load(args.filename, flags)
    return [inventory.spec_of({**flags, "name": args.name}, "enroll")]


def issuer_for(client: Client) -> tokens.TokenIssuer:
    """One single-use join token per host, from the coordinator's token API."""
    return tokens.ApiTokenIssuer(client)


async def _addresses(client: Client, args: argparse.Namespace, deploying: bool) -> tuple[str, str]:
    """Where the hosts' agents dial and join: the flags, else what the coordinator advertises."""
    coordinator, join = args.coordinator_address, args.join_address
    if deploying and not (coordinator and join):
        info = await client.cluster_info()
        coordinator = coordinator or info.server
        join = join or info.token_server
    if deploying and (not coordinator or coordinator.startswith("unix:")):
        raise errors.InvalidArgument(
            "--coordinator-address HOST:PORT is needed: hosts cannot dial a unix socket"
        )
    return coordinator, join


class Printer:
    """Progress lines as transitions happen; quiet under -o json."""

    def __init__(self, names: Sequence[str], quiet: bool) -> None:
        self.width = max((len(n) for n in names), default=0)
        self.quiet = quiet

    def progress(self, name: str, t: Transition) -> None:
        if self.quiet:
            return
        target = f" -> {t.target}" if t.target else ""
        print(f"{t.elapsed:7.1f}s  {name:<{self.width}}  {t.state}{target}", flush=True)

    def result(self, r: Result, verb: str) -> None:
        if self.quiet:
            return
        if r.ok:
            extra = [f"node {r.node_uuid}"] if r.node_uuid else []
            if r.token_id:
                extra.append(f"join token {r.token_id}")
            if r.joined:
                extra.append(f"agent {r.joined}")
            if r.note:
                extra.append(r.note)
            print(f"{r.name}: {verb} {r.state} in {r.elapsed:.1f}s ({'; '.join(extra)})", flush=True)
        else:
            print(f"{r.name}: FAILED after {r.elapsed:.1f}s: {r.error}", file=sys.stderr, flush=True)
            if r.hint:
                print(f"{r.name}: hint: {r.hint}", file=sys.stderr, flush=True)


def _emit_json(results: Sequence[Result], single: bool) -> None:
    docs = [r.to_dict() for r in results]
    print(json.dumps(docs[0] if single else docs, indent=2))


async def _bounded(limit: int, jobs: Sequence[Any]) -> list[Result]:
    semaphore = asyncio.Semaphore(max(1, limit))

    async def run(job: Any) -> Result:
        async with semaphore:
            result: Result = await job()
            return result

    return list(await asyncio.gather(*(run(j) for j in jobs)))


async def cmd_enroll(client: Client, args: argparse.Namespace) -> int:
    specs = specs_of(args)
    coordinator, join = await _addresses(client, args, any(s.image for s in specs))
    options = Options(
        coordinator=coordinator,
        join_address=join,
        retry=args.retry,
        wait_join=args.wait,
        poll_interval=args.poll_interval,
        timeout=args.timeout,
        join_timeout=args.join_timeout,
    )
    printer = Printer([s.name for s in specs], quiet=args.output == "json")
    baremetal = ironic.Baremetal(await asyncio.to_thread(ironic.connect, ironic_auth(args)))
    try:
        enroller = Enroller(
            baremetal, issuer_for(client), ApiRecorder(client), options, progress=printer.progress
        )

        def job(spec: EnrollSpec) -> Any:
            async def go() -> Result:
                result = await enroller.enroll(spec)
                printer.result(result, "enrolled,")
                return result

            return go

        results = await _bounded(args.parallel, [job(s) for s in specs])
    finally:
        baremetal.close()
    if args.output == "json":
        _emit_json(results, single=bool(args.name))
    return 0 if all(r.ok for r in results) else 1


async def cmd_unenroll(client: Client, args: argparse.Namespace) -> int:
    options = Options(coordinator="", poll_interval=args.poll_interval, timeout=args.timeout)
    printer = Printer(args.names, quiet=args.output == "json")
    baremetal = ironic.Baremetal(await asyncio.to_thread(ironic.connect, ironic_auth(args)))
    try:
        enroller = Enroller(
            baremetal, issuer_for(client), ApiRecorder(client), options, progress=printer.progress
        )
        results = []
        for name in args.names:
            result = await enroller.unenroll(name)
            printer.result(result, "unenrolled,")
            results.append(result)
    finally:
        baremetal.close()
    if args.output == "json":
        _emit_json(results, single=len(results) == 1)
    return 0 if all(r.ok for r in results) else 1


COMMANDS = {"enroll": cmd_enroll, "unenroll": cmd_unenroll}
