"""scripts/apply-examples.sh, the step of `make up` that applies examples/, against an in-process cluster.

`make up` stays idempotent when the user changed an example's object where
apply cannot update it (issue 9: the 2015 article's own apache pod, its
container named my-fedora-apache, under the example's name `apache`): that
example is reported on one line and left alone, the rest is applied and the
step succeeds. Any other failure still fails it, naming the file and the object.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import sys

from atoll import kinds
from coordinator import manifests
from tests.functional.harness import Cluster
from tests.functional.test_cli import EXAMPLES, the_2015_apache

SCRIPT = EXAMPLES.parent / "scripts" / "apply-examples.sh"
CONFLICT = (
    'pod "apache" differs from the file where apply cannot update it '
    "(spec: pod updates may not change fields other than spec.containers[*].image); "
    "left as it is: delete it and apply again to replace it"
)


async def apply_examples(examples: pathlib.Path, *cli_args: str) -> tuple[int, str, str]:
    """Run the script as `make up` does, with this Python's `coordinator` CLI."""
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        str(examples),
        sys.executable,
        "-m",
        "coordinator.cli.main",
        *cli_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_an_example_the_user_changed_is_reported_and_the_rest_applied(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    assert cluster.client is not None
    (user_pod,) = manifests.load_file(the_2015_apache(tmp_path))
    await cluster.client.create(user_pod)
    examples = str(EXAMPLES)

    code, out, err = await apply_examples(EXAMPLES, *cluster.cli_args())
    assert code == 0, err
    assert err == f"warning: {examples}/apache-pod.json: {CONFLICT}\n"
    assert out.splitlines() == [
        "pod/apache-v1 created",
        "replicationcontroller/apache-controller created",
        "replicationcontroller/apache-v1 created",
        "service/apache-v1 created",
        "service/frontend created",
        "replicationcontroller/redis-leader created",
        "service/redis-leader created",
        "replicationcontroller/redis-follower created",
        "service/redis-follower created",
        "replicationcontroller/guestbook created",
        "service/guestbook created",
    ]
    # Again (make up is idempotent): the same one line, everything else unchanged.
    code, out, err = await apply_examples(EXAMPLES, *cluster.cli_args())
    assert code == 0, err
    assert err == f"warning: {examples}/apache-pod.json: {CONFLICT}\n"
    assert [line.split()[-1] for line in out.splitlines()] == ["unchanged"] * 11
    guestbook = await cluster.client.get(kinds.by_name("Service"), "default", "guestbook")
    assert 30000 <= guestbook.spec.ports[0].node_port <= 32767  # type: ignore[attr-defined]
    pod = await cluster.client.get(kinds.by_name("Pod"), "default", "apache")
    assert [c.name for c in pod.spec.containers] == ["my-fedora-apache"]  # type: ignore[attr-defined]


async def test_other_failures_still_fail(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "examples"
    shutil.copytree(EXAMPLES, broken)
    service = json.loads((broken / "frontend-service.json").read_text())
    service["port"] = "eighty"
    (broken / "frontend-service.json").write_text(json.dumps(service))
    code, out, err = await apply_examples(broken, *cluster.cli_args())
    assert (code, out) == (1, "")  # every file is checked before anything is applied
    assert err == (
        f'error: {broken}/frontend-service.json: service "frontend": port: expected an integer, got "eighty"\n'
    )
    assert cluster.client is not None
    pods, _ = await cluster.client.list(kinds.by_name("Pod"))
    assert pods == []

    code, out, err = await apply_examples(EXAMPLES, "--server", "127.0.0.1:1")
    assert code == 1 and out == ""
    assert err.startswith(f'error: {EXAMPLES}/apache-pod.json: pod "apache": cannot reach the coordinator'), (
        err
    )
