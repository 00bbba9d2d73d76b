"""Registry settings on real engines against a real registry (Debian's docker-registry).

Layout, all inside one test bed (nothing listens outside it, nothing leaves the machine):

* h0 runs `docker-registry serve` bound to its underlay address 198.51.100.10;
* h1's engine pushes the demo `fedora/apache` there (its own insecure setting
  goes through DaemonJsonConfigurator, the agent's code);
* h2's engine has no `fedora/apache`; the agent's real code path
  (RegistryManager + DaemonJsonConfigurator + DockerRuntime + ensure_image)
  resolves the unqualified name to the registry, pulls it and runs it.

The registry speaks plain HTTP, so every successful pull here is also the
"insecure registry works without TLS" test, and the first, refused pull
shows the engine's real message when it is not marked insecure. Docker Hub
is blocked through a legacy /etc/sysconfig/docker file, so no candidate
ever points outside the bed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from agent.pods import images
from agent.registries import DaemonJsonConfigurator, EngineSettings, RegistryManager
from agent.runtime.base import ContainerSpec, PortBinding
from agent.runtime.docker import DockerRuntime
from atoll.v1 import network_pb2, pod_pb2
from tests.integration.testbed import Host, Process, TestBed, wait_for

IF_NOT_PRESENT = pod_pb2.PULL_POLICY_IF_NOT_PRESENT
APACHE = "fedora/apache"


def start_registry(host: Host, port: int, *, htpasswd: str = "") -> tuple[str, Process]:
    """docker-registry on `host`'s underlay address; returns its host:port once it answers."""
    root = host.dir / f"registry-{port}"
    root.mkdir()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"{host.ip}:{port}"},
    }
    if htpasswd:
        (root / "htpasswd").write_text(htpasswd)
        config["auth"] = {"htpasswd": {"realm": "atoll-test", "path": str(root / "htpasswd")}}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    proc = host.spawn(["/usr/bin/docker-registry", "serve", str(root / "config.yml")], label="registry")
    address = f"{host.ip}:{port}"
    wait_for(
        lambda: host.http_get(f"http://{address}/v2/").status in (200, 401),
        timeout=30,
        message=f"docker-registry on {address}",
    )
    return address, proc


def configurator(host: Host, runtime: DockerRuntime | None = None) -> DaemonJsonConfigurator:
    """What the agent on `host` would use: the bed's dockerd reads <host dir>/daemon.json."""
    return DaemonJsonConfigurator(
        host.dir / "daemon.json",
        host.dir / "dockerd.pid",
        check=runtime.registry_config if runtime is not None else None,
    )


def registry_config(host: Host) -> dict[str, Any]:
    return dict(host.docker().api.info()["RegistryConfig"])


def insecure_hosts(host: Host) -> set[str]:
    configs = registry_config(host)["IndexConfigs"]
    return {name for name, c in configs.items() if not c["Secure"]}


def push(host: Host, repo: str, auth: dict[str, str] | None = None) -> None:
    """Tag the demo apache as `repo`:latest on `host` and push it with `host`'s engine."""
    host.docker().images.get(f"{APACHE}:latest").tag(repo, "latest")
    errors = [
        line["error"]
        for line in host.docker().api.push(repo, tag="latest", stream=True, decode=True, auth_config=auth)
        if "error" in line
    ]
    assert not errors, f"push of {repo} from {host.name} failed: {errors}"


def drop_image(host: Host, *refs: str) -> None:
    for ref in refs:
        try:
            host.docker().images.remove(ref)
        except docker.errors.ImageNotFound:
            pass
    for ref in refs:
        assert not host.docker().api.images(name=ref), f"{ref} still on {host.name}"


@pytest.fixture
def bed(testbed_factory: Callable[..., TestBed]) -> TestBed:
    return testbed_factory(3)


@pytest.fixture
def sysconfig(tmp_path: Path) -> Iterator[Path]:
    """A legacy RHEL sysconfig that blocks Docker Hub: nothing here may try to leave the bed."""
    path = tmp_path / "sysconfig-docker"
    path.write_text("# as on an Atomic host\nBLOCK_REGISTRY='--block-registry docker.io'\n")
    yield path


async def test_search_insecure_blocked_and_reload_on_a_real_registry(bed: TestBed, sysconfig: Path) -> None:
    h0, h1, h2 = bed.hosts
    registry, _ = start_registry(h0, 5000)
    assert h2.http_get(f"http://{registry}/v2/").status == 200  # reachable across the underlay

    # h1 pushes; its engine must treat the plain-HTTP registry as insecure, reloaded by SIGHUP.
    h1_pid = h1.dockerd.pid if h1.dockerd else 0
    assert await configurator(h1).apply(EngineSettings(insecure=(registry,))) is True
    wait_for(lambda: registry in insecure_hosts(h1), timeout=10, message="h1 reloaded insecure-registries")
    push(h1, f"{registry}/{APACHE}")
    assert h1.dockerd is not None and h1.dockerd.pid == h1_pid and h1.dockerd.alive  # reloaded, not restarted

    drop_image(h2, f"{APACHE}:latest")
    runtime = DockerRuntime(h2.docker_host)
    daemon_json = h2.dir / "daemon.json"
    daemon_json.write_text('{"debug": false, "log-level": "info"}\n')  # keys the agent must keep
    manager = RegistryManager(configurator(h2, runtime), local_file=None, legacy_file=sysconfig)
    try:
        # Search registry only, not (yet) insecure: the engine refuses plain HTTP, and says so.
        assert await manager.apply(network_pb2.RegistriesSpec(search=[registry])) is True
        assert json.loads(daemon_json.read_text()) == {
            "debug": False,
            "log-level": "info",
        }  # nothing to write
        with pytest.raises(images.ImageError) as refused:
            await images.ensure_image(runtime, APACHE, IF_NOT_PRESENT, manager.resolver())
        assert refused.value.reason == "ErrImagePull"
        assert refused.value.message.startswith(
            f'failed to pull image "{APACHE}" (tried {registry}; blocked: docker.io): '
        )
        assert "server gave HTTP response to HTTPS client" in refused.value.message

        # Insecure too: written to daemon.json, dockerd reloads (SIGHUP), the pull works over HTTP.
        pushed = network_pb2.RegistriesSpec(search=[registry], insecure=[registry])
        assert await manager.apply(pushed) is True
        assert json.loads(daemon_json.read_text()) == {
            "debug": False,
            "log-level": "info",
            "insecure-registries": [registry],
        }
        assert registry in insecure_hosts(h2)
        got = await images.ensure_image(runtime, APACHE, IF_NOT_PRESENT, manager.resolver())
        assert got == images.ImageResult(f"{registry}/{APACHE}", pulled=True)
        assert not h2.docker().api.images(name=APACHE)  # only the qualified name exists
        again = await images.ensure_image(runtime, APACHE, IF_NOT_PRESENT, manager.resolver())
        assert again == images.ImageResult(f"{registry}/{APACHE}", pulled=False)
        assert await manager.apply(pushed) is False  # unchanged: no write, no signal

        # A container runs from the pulled image and serves the demo page.
        spec = ContainerSpec(
            name="registry-test-apache",
            image=got.ref,
            labels={"io.atoll.test": "registries"},
            network="bridge",
            ports=(PortBinding(80, "tcp", 8080),),
        )
        cid = await runtime.create_container(spec)
        await runtime.start_container(cid)
        page = wait_for(
            lambda: h2.http_get(f"http://{h2.ip}:8080/").body, timeout=20, message="apache from the registry"
        )
        assert "Apache on Atoll" in page

        # The registry's own message reaches the pod's.
        with pytest.raises(images.ImageError) as missing:
            await images.ensure_image(runtime, f"{registry}/nosuch/image", IF_NOT_PRESENT, manager.resolver())
        assert "manifest unknown" in missing.value.message or "not found" in missing.value.message

        # Mirrors reload live as well.
        mirror = f"http://{registry}"
        pushed.mirrors.append(mirror)
        assert await manager.apply(pushed) is True
        assert [m.rstrip("/") for m in registry_config(h2)["Mirrors"]] == [mirror]

        # Blocking the registry: clear reasons, nothing pulled, and blocked wins over insecure
        # and mirrors, which leave the engine's config as [] (a deleted key would not reload).
        pushed.blocked.append(registry)
        assert await manager.apply(pushed) is True
        with pytest.raises(images.ImageError) as blocked:
            await images.ensure_image(runtime, f"{registry}/{APACHE}", IF_NOT_PRESENT, manager.resolver())
        assert blocked.value.reason == "ErrImagePull"
        assert blocked.value.message == (
            f'failed to pull image "{registry}/{APACHE}": '
            f"registry {registry} is blocked by the node's registry settings"
        )
        with pytest.raises(images.ImageError) as nowhere:
            await images.ensure_image(runtime, APACHE, IF_NOT_PRESENT, manager.resolver())
        assert "docker.io is blocked" in nowhere.value.message
        written = json.loads(daemon_json.read_text())
        assert written["insecure-registries"] == [] and written["registry-mirrors"] == []
        assert registry not in insecure_hosts(h2) and not registry_config(h2)["Mirrors"]
        assert h2.docker().containers.get(cid).status == "running"  # reloads never touch containers
    finally:
        await runtime.close()


def _htpasswd(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt, which docker-registry requires; Python 3.11 still has it

        hashed = crypt.crypt(
            password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)
        )  # lowest cost: the registry hashes per request
    return f"{user}:{hashed}\n"


async def test_credentials_for_a_private_registry(
    testbed_factory: Callable[..., TestBed], sysconfig: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secret = "Tr0ub4dor-and-3"
    bed = testbed_factory(2)
    h0, h1 = bed.hosts
    registry, _ = start_registry(h0, 5001, htpasswd=_htpasswd("deploy", secret))
    runtime = DockerRuntime(h1.docker_host)
    local = tmp_path / "registries.yaml"
    local.write_text(
        f"insecure: ['{registry}']\nauths:\n  - {{registry: '{registry}', username: deploy, password: '{secret}'}}\n"
    )
    local.chmod(0o600)
    manager = RegistryManager(configurator(h1, runtime), local_file=local, legacy_file=sysconfig)
    private = f"{registry}/private/apache"
    try:
        await manager.apply(None)  # before the coordinator speaks: the local file already holds
        assert registry in insecure_hosts(h1)
        push(h1, private, auth={"username": "deploy", "password": secret})
        drop_image(h1, f"{private}:latest", f"{APACHE}:latest")

        # The coordinator adds the search registry; the local file's credentials pull.
        await manager.apply(network_pb2.RegistriesSpec(search=[registry]))
        got = await images.ensure_image(runtime, "private/apache", IF_NOT_PRESENT, manager.resolver())
        assert got == images.ImageResult(private, pulled=True)

        # Pushed credentials win over local ones for the same registry: a wrong password
        # fails with the registry's message.
        drop_image(h1, f"{private}:latest")
        wrong = network_pb2.RegistriesSpec(
            search=[registry],
            auths=[network_pb2.RegistryAuth(registry=registry, username="deploy", password=secret + "-x")],
        )
        await manager.apply(wrong)
        with pytest.raises(images.ImageError) as refused:
            await images.ensure_image(runtime, "private/apache", IF_NOT_PRESENT, manager.resolver())
        assert "unauthorized" in refused.value.message or "authentication required" in refused.value.message

        # No credentials at all: the registry's own words again.
        local.write_text(f"insecure: ['{registry}']\n")
        await manager.apply(network_pb2.RegistriesSpec(search=[registry]))
        with pytest.raises(images.ImageError) as denied:
            await images.ensure_image(runtime, "private/apache", IF_NOT_PRESENT, manager.resolver())
        assert "no basic auth credentials" in denied.value.message or "unauthorized" in denied.value.message
        for text in (caplog.text, refused.value.message, denied.value.message, manager.settings.summary()):
            assert secret not in text
    finally:
        await runtime.close()


async def test_engine_flags_are_never_duplicated_in_daemon_json(
    testbed_factory: Callable[..., TestBed], caplog: pytest.LogCaptureFixture
) -> None:
    # As on RHEL, where docker.service passes INSECURE_REGISTRY as flags: writing the same
    # setting to daemon.json would make dockerd refuse the reload and its next start.
    flagged = "198.51.100.99:5000"
    bed = testbed_factory(1, images=False, dockerd_args=[f"--insecure-registry={flagged}"])
    (host,) = bed.hosts
    runtime = DockerRuntime(host.docker_host)
    try:
        want = EngineSettings(insecure=("198.51.100.10:5000",), mirrors=("http://198.51.100.10:5000",))
        assert await configurator(host, runtime).apply(want) is True
        assert json.loads((host.dir / "daemon.json").read_text()) == {
            "registry-mirrors": ["http://198.51.100.10:5000"]
        }
        assert (
            "started with --insecure-registry flags" in caplog.text and "198.51.100.10:5000 do" in caplog.text
        )
        assert [m.rstrip("/") for m in registry_config(host)["Mirrors"]] == ["http://198.51.100.10:5000"]
        assert insecure_hosts(host) == {flagged}
        host.close_client()
        host.restart_docker()  # still starts with the file the agent wrote
        assert insecure_hosts(host) == {flagged}
    finally:
        await runtime.close()
