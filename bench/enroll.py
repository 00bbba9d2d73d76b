"""`coordinator enroll` against the raw client flow on the same real Ironic: Ironic calls and wall time.

    .venv/bin/python bench/enroll.py [--nodes 3] [--poll 0.5] [--deploy-delay 1]

For each node, two enrollments of identical hosts (fake-hardware, two NICs,
an image, a configdrive) from nothing to `active`:

* atoll: `coordinator enroll NAME ...` run in-process (argument parsing, the
  Ironic connection, MAC checks, a join token and Machine records through an
  in-process coordinator over mutual TLS, the user-data rendering, progress);
* raw:   the same Ironic API calls made directly with openstacksdk, as an
  operator's script would (create node, ports, manage, inspect, provide,
  instance_info, active with a configdrive), polling at the same interval.

Prints the Ironic calls per node by METHOD and path template for both, the
wall times, and atoll/raw as a ratio (median over the nodes). Ironic is the
test suite's: tests/integration/ironic/harness.py installs it (cached) in its
own venv and runs it on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import pathlib
import statistics
import sys
import tempfile
import time

from common import ROOT, machine  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))

from coordinator.cli import main as cli_main
from coordinator.cli.provisioning import ironic
from tests.functional.harness import Cluster
from tests.integration.ironic.harness import Ironic, ensure_venv

IMAGE = ["--image", "http://127.0.0.1:9/atomic.qcow2", "--image-checksum", "sha256:" + "ab" * 32]


def macs(prefix: str, i: int) -> list[str]:
    return [f"52:54:{prefix}:00:{i:02x}:{nic:02x}" for nic in (1, 2)]


async def atoll_enroll(
    cluster: Cluster, server: Ironic, name: str, i: int, poll: float, pw: pathlib.Path
) -> tuple[float, collections.Counter[str]]:
    shared = ironic.CallLog()
    original = ironic.CallLog
    ironic.CallLog = lambda: shared  # type: ignore[assignment,misc]  # count the CLI's own connection
    argv = ["enroll", name, "--driver", "fake-hardware", "--bmc", "10.0.0.5", "--bmc-user", "admin"]
    argv += ["--bmc-password-file", str(pw), "--ironic-url", server.url, "--poll-interval", str(poll), *IMAGE]
    for mac in macs("aa", i):
        argv += ["--mac", mac]
    args = cli_main.build_parser().parse_args(argv)
    assert cluster.client is not None
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = await cli_main.runner("enroll")(cluster.client, args)
    finally:
        ironic.CallLog = original  # type: ignore[misc]
    elapsed = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"atoll enroll of {name} failed")
    return elapsed, shared.counts


def raw_enroll(server: Ironic, name: str, i: int, poll: float) -> tuple[float, collections.Counter[str]]:
    """The same calls straight through openstacksdk, the way a script would make them."""
    import openstack.connection

    started = time.monotonic()
    conn = openstack.connection.Connection(
        auth_type="none", baremetal_endpoint_override=server.url, baremetal_api_version="1"
    )
    bm = ironic.Baremetal(conn)  # only for its request counter; every call below is the SDK's own
    sdk = conn.baremetal

    def wait(uuid: str, stable: str) -> None:
        while True:
            node = sdk.get_node(uuid, fields=["provision_state", "target_provision_state", "last_error"])
            if node.provision_state == stable and not node.target_provision_state:
                return
            if "failed" in (node.provision_state or ""):
                raise SystemExit(f"raw {name}: {node.provision_state}: {node.last_error}")
            time.sleep(poll)

    node = sdk.create_node(
        name=name,
        driver="fake-hardware",
        driver_info={"fake_address": "10.0.0.5", "fake_username": "admin", "fake_password": "x"},
    )
    for mac in macs("bb", i):
        sdk.create_port(node_id=node.id, address=mac)
    for target, stable in (("manage", "manageable"), ("inspect", "manageable"), ("provide", "available")):
        sdk.set_node_provision_state(node.id, target)
        wait(node.id, stable)
    sdk.patch_node(
        node.id,
        [
            {"op": "add", "path": "/instance_info/image_source", "value": IMAGE[1]},
            {"op": "add", "path": "/instance_info/root_gb", "value": 10},
            {"op": "add", "path": "/instance_info/image_os_hash_algo", "value": "sha256"},
            {"op": "add", "path": "/instance_info/image_os_hash_value", "value": "ab" * 32},
        ],
    )
    sdk.set_node_provision_state(
        node.id, "active", config_drive={"user_data": "#cloud-config\nhostname: x\n"}
    )
    wait(node.id, "active")
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed, bm.calls.counts


def show(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{key} x{n}" for key, n in sorted(counts.items()))


async def run(args: argparse.Namespace) -> None:
    venv, install = ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        server = Ironic(venv, pathlib.Path(tmp) / "ironic", deploy_delay=args.deploy_delay).start()
        cluster = await Cluster(pathlib.Path(tmp)).start()
        pw = pathlib.Path(tmp) / "bmc.pass"
        pw.write_text("bench\n")
        try:
            print(
                f"ironic {server.url} (install {install:.0f}s, start {server.startup_seconds:.1f}s), "
                f"fake deploy_delay {args.deploy_delay}s, poll {args.poll}s"
            )
            atoll_times, raw_times = [], []
            for i in range(args.nodes):
                a_time, a_calls = await atoll_enroll(cluster, server, f"atoll-{i}", i, args.poll, pw)
                r_time, r_calls = await asyncio.to_thread(raw_enroll, server, f"raw-{i}", i, args.poll)
                atoll_times.append(a_time)
                raw_times.append(r_time)
                print(
                    f"\nnode {i}: atoll {a_time:.2f}s, {sum(a_calls.values())} Ironic calls; "
                    f"raw {r_time:.2f}s, {sum(r_calls.values())} calls; ratio {a_time / r_time:.2f}"
                )
                print(f"  atoll: {show(a_calls)}")
                print(f"  raw:   {show(r_calls)}")
            ratios = [a / r for a, r in zip(atoll_times, raw_times, strict=True)]
            print(
                f"\nmedian wall time: atoll {statistics.median(atoll_times):.2f}s, raw {statistics.median(raw_times):.2f}s, "
                f"atoll/raw {statistics.median(ratios):.2f}"
            )
        finally:
            await cluster.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between state polls, both flows")
    parser.add_argument("--deploy-delay", type=int, default=1, help="Ironic's [fake] deploy_delay")
    args = parser.parse_args()
    print(machine())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
