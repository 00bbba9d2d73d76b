"""Registry settings: sources, merge order, image resolution, daemon.json, and secrets staying secret."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from agent.registries import (
    DaemonJsonConfigurator,
    EngineConfigError,
    EngineSettings,
    ImageBlockedError,
    ImageResolver,
    RecordingEngineConfigurator,
    RegistryManager,
    RegistrySettings,
    SettingsError,
    legacy,
    registry_of,
    settings,
    split_registry,
)
from agent.registries.engine import engine_mismatches, flag_conflicts, flag_values, merge_config
from atoll.v1 import network_pb2

LAB = "kubernetes.lab.com:5000"


def resolver(**kwargs: list[str]) -> ImageResolver:
    layer = settings.build(source="test", strict=True, **kwargs)  # type: ignore[arg-type]
    return ImageResolver(settings.merge(layer))


# -- qualification and resolution ------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "registry", "rest"),
    [
        ("busybox", None, "busybox"),
        ("busybox:1.36", None, "busybox:1.36"),
        ("fedora/apache", None, "fedora/apache"),
        ("library/busybox@sha256:" + "a" * 64, None, "library/busybox@sha256:" + "a" * 64),
        (f"{LAB}/fedora/apache", LAB, "fedora/apache"),
        ("registry.access.redhat.com/rhel7", "registry.access.redhat.com", "rhel7"),
        ("localhost/app", "localhost", "app"),
        ("localhost:5000/app:v1", "localhost:5000", "app:v1"),
        ("Registry/app", "Registry", "app"),  # upper case: a host, never a repository
        ("docker.io/library/busybox", "docker.io", "library/busybox"),
    ],
)
def test_qualified_names_follow_dockers_rule(ref: str, registry: str | None, rest: str) -> None:
    assert split_registry(ref) == (registry, rest)


def test_docker_hub_aliases_are_one_registry() -> None:
    assert registry_of("busybox") == "docker.io"
    assert registry_of("index.docker.io/library/busybox") == "docker.io"
    assert registry_of("Registry-1.Docker.IO/x/y") == "docker.io"
    assert settings.canonical_registry("https://index.docker.io/v1/") == "docker.io"
    assert settings.canonical_registry("HTTP://Reg.Lab:5000/") == "reg.lab:5000"


def test_unqualified_names_try_search_registries_in_order_then_docker_hub() -> None:
    r = resolver(search=[LAB, "registry.access.redhat.com"])
    assert r.candidates("fedora/apache") == [
        f"{LAB}/fedora/apache",
        "registry.access.redhat.com/fedora/apache",
        "fedora/apache",  # Docker Hub's candidate is the name as written
    ]
    assert r.candidates("busybox:1.36")[0] == f"{LAB}/busybox:1.36"


def test_qualified_names_are_used_as_is() -> None:
    r = resolver(search=[LAB])
    assert r.candidates("quay.io/coreos/etcd:v2") == ["quay.io/coreos/etcd:v2"]
    assert r.candidates("localhost/app") == ["localhost/app"]


def test_without_settings_a_name_is_itself() -> None:
    assert ImageResolver().candidates("fedora/apache") == ["fedora/apache"]


def test_docker_hub_in_the_search_list_keeps_its_place() -> None:
    r = resolver(search=["docker.io", LAB])
    assert r.candidates("fedora/apache") == ["fedora/apache", f"{LAB}/fedora/apache"]


def test_blocked_docker_hub_leaves_only_the_search_registries() -> None:
    r = resolver(search=[LAB], blocked=["docker.io"])
    res = r.resolve("fedora/apache")
    assert [c.ref for c in res.candidates] == [f"{LAB}/fedora/apache"] and res.skipped == ("docker.io",)


def test_a_blocked_registry_fails_with_a_clear_reason() -> None:
    r = resolver(blocked=["docker.io", "quay.io"])
    with pytest.raises(ImageBlockedError) as qualified:
        r.candidates("quay.io/coreos/etcd")
    assert qualified.value.message == "registry quay.io is blocked by the node's registry settings"
    with pytest.raises(ImageBlockedError) as hub:
        r.candidates("docker.io/library/busybox")
    assert "registry docker.io is blocked" in hub.value.message
    with pytest.raises(ImageBlockedError) as unqualified:
        r.candidates("busybox")
    assert (
        "docker.io is blocked" in unqualified.value.message
        and "no search registry" in unqualified.value.message
    )


def test_a_resolution_is_remembered_and_a_refusal_raised_afresh_each_time() -> None:
    r = resolver(search=[LAB], blocked=["quay.io"])
    first = r.resolve("fedora/apache")
    assert r.resolve("fedora/apache") is first  # the settings never change: asked once
    errors = []
    for _ in range(2):
        with pytest.raises(ImageBlockedError) as blocked:
            r.resolve("quay.io/coreos/etcd")
        errors.append(blocked.value)
    assert errors[0] is not errors[1] and errors[0].message == errors[1].message
    assert resolver(search=[]).resolve("fedora/apache") is not first  # each resolver its own


def test_block_all_allows_only_the_search_list() -> None:
    r = resolver(search=[LAB], blocked=["all"])
    assert r.candidates("fedora/apache") == [f"{LAB}/fedora/apache"]
    assert r.candidates(f"{LAB}/x") == [f"{LAB}/x"]
    with pytest.raises(ImageBlockedError):
        r.candidates("quay.io/x")


# -- merging the sources -----------------------------------------------------------------


def test_local_and_legacy_add_to_the_pushed_lists_and_blocked_wins() -> None:
    pushed = settings.from_proto(
        network_pb2.RegistriesSpec(
            search=["a.lab", "b.lab"],
            insecure=["a.lab"],
            mirrors=["https://mirror.lab"],
            auths=[network_pb2.RegistryAuth(registry="a.lab", username="u1", password="p1")],
        )
    )
    local = settings.from_mapping(
        {
            "search": ["c.lab", "a.lab"],
            "insecure": ["10.1.0.0/16", "b.lab"],
            "blocked": ["b.lab"],
            "auths": [
                {"registry": "a.lab", "username": "local", "password": "p2"},
                {"registry": "c.lab", "username": "u3", "password": "p3"},
            ],
        },
        "local",
    )
    sysconfig = legacy.parse(
        "ADD_REGISTRY='--add-registry d.lab'\nBLOCK_REGISTRY='--block-registry mirror.lab'\n"
    )
    merged = settings.merge(pushed, local, sysconfig)
    assert merged.search == ("a.lab", "c.lab", "d.lab")  # pushed, local, legacy; b.lab blocked
    assert merged.insecure == ("a.lab", "10.1.0.0/16")
    assert merged.blocked == ("b.lab", "mirror.lab")
    assert merged.mirrors == ()  # its host is blocked
    assert {c.registry: c.username for c in merged.auths} == {"a.lab": "u1", "c.lab": "u3"}


def test_pushed_entries_that_are_bad_are_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    spec = network_pb2.RegistriesSpec(search=["ok.lab", "not a host"], mirrors=["mirror.lab"])
    got = settings.from_proto(spec)
    assert got.search == ("ok.lab",) and got.mirrors == ()
    assert "not a host" in caplog.text and "mirror.lab" in caplog.text


def test_local_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text("search: [ok.lab]\nserach: [typo.lab]\n")
    with pytest.raises(SettingsError, match=r"registries.yaml: unknown key\(s\) serach"):
        settings.load_file(path)
    path.write_text("mirrors: [ftp://m.lab]\n")
    with pytest.raises(SettingsError, match=r"mirror 'ftp://m\.lab' must be an http"):
        settings.load_file(path)
    assert settings.load_file(tmp_path / "missing.yaml") == RegistrySettings()


# -- legacy /etc/sysconfig/docker -----------------------------------------------------------

SYSCONFIG = """\
# /etc/sysconfig/docker

# Modify these options if you want to change the way the docker daemon runs
OPTIONS='--selinux-enabled --log-driver=journald'
DOCKER_CERT_PATH=/etc/docker

# ADD_REGISTRY='--add-registry commented.out.lab'
ADD_REGISTRY='--add-registry registry.access.redhat.com --add-registry kubernetes.lab.com:5000'
INSECURE_REGISTRY="--insecure-registry kubernetes.lab.com:5000 --insecure-registry=10.0.0.0/8"  # lab
export BLOCK_REGISTRY='--block-registry docker.io'
"""


def test_legacy_sysconfig_keys() -> None:
    got = legacy.parse(SYSCONFIG)
    assert got.search == ("registry.access.redhat.com", LAB)
    assert got.insecure == (LAB, "10.0.0.0/8")
    assert got.blocked == ("docker.io",)


def test_legacy_sysconfig_later_assignment_wins_and_block_all() -> None:
    text = "ADD_REGISTRY='--add-registry a.lab'\nADD_REGISTRY='--add-registry b.lab'\nBLOCK_REGISTRY='--block-registry=all'\n"
    got = legacy.parse(text)
    assert got.search == ("b.lab",) and got.blocked == ("*",)


def test_legacy_sysconfig_oddities(caplog: pytest.LogCaptureFixture) -> None:
    assert legacy.parse("ADD_REGISTRY=\nINSECURE_REGISTRY=''\n") == RegistrySettings()
    got = legacy.parse("ADD_REGISTRY='--add-registry $REG --add-registry ok.lab --foo'\n")
    assert got.search == ("ok.lab",)
    assert "$REG" in caplog.text and "--foo" in caplog.text
    with pytest.raises(SettingsError, match="cannot parse"):
        legacy.parse("ADD_REGISTRY='--add-registry a.lab\n")


def test_legacy_file_is_read_only_if_present(tmp_path: Path) -> None:
    assert legacy.load_file(tmp_path / "docker") == RegistrySettings()
    (tmp_path / "docker").write_text(SYSCONFIG)
    assert legacy.load_file(tmp_path / "docker").blocked == ("docker.io",)


# -- daemon.json -----------------------------------------------------------------------------


def test_daemon_json_merge_keeps_every_other_key_in_order() -> None:
    current = {"log-driver": "journald", "insecure-registries": ["old.lab"], "storage-driver": "overlay2"}
    new = merge_config(current, EngineSettings(insecure=("a.lab",), mirrors=("https://m.lab",)))
    assert list(new) == ["log-driver", "insecure-registries", "storage-driver", "registry-mirrors"]
    assert new["insecure-registries"] == ["a.lab"] and new["registry-mirrors"] == ["https://m.lab"]
    # An emptied list stays as [] (dockerd's reload ignores absent keys); absent and empty stays absent.
    assert merge_config(new, EngineSettings())["insecure-registries"] == []
    assert "registry-mirrors" not in merge_config({"debug": True}, EngineSettings())
    assert merge_config(current, EngineSettings(), skip=frozenset({"insecure-registries"})) == current


def test_flag_conflicts() -> None:
    argv = ["/usr/bin/dockerd", "--insecure-registry", "a.lab", "--registry-mirror=https://m"]
    assert flag_conflicts(argv) == {"insecure-registries", "registry-mirrors"}
    assert flag_values([*argv, "--insecure-registry=b.lab"]) == {
        "insecure-registries": ["a.lab", "b.lab"],
        "registry-mirrors": ["https://m"],
    }
    assert flag_conflicts(["dockerd", "--config-file=/x"]) == frozenset()


def test_engine_mismatches_reads_docker_info() -> None:
    info = {
        "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"],
        "IndexConfigs": {
            "docker.io": {"Name": "docker.io", "Secure": True, "Official": True},
            "a.lab:5000": {"Name": "a.lab:5000", "Secure": False, "Official": False},
        },
        "Mirrors": ["https://m.lab/"],
    }
    want = EngineSettings(insecure=("a.lab:5000", "10.0.0.0/8"), mirrors=("https://m.lab",))
    keys = frozenset({"insecure-registries", "registry-mirrors"})
    assert engine_mismatches(want, info, keys) == []
    assert len(engine_mismatches(EngineSettings(), info, keys)) == 2


@pytest.fixture
def fake_dockerd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A pid file naming "dockerd" (this process, as /proc sees it patched) and the signals it got."""
    sent: list[int] = []
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    real_read_text, real_read_bytes = Path.read_text, Path.read_bytes

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if str(self) == f"/proc/{os.getpid()}/comm":
            return "dockerd\n"
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    def read_bytes(self: Path) -> bytes:
        if str(self) == f"/proc/{os.getpid()}/cmdline":
            return b"dockerd\0--config-file=" + str(tmp_path / "daemon.json").encode() + b"\0"
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(sig))
    return sent


async def test_daemon_json_is_written_atomically_and_dockerd_signalled_once(
    tmp_path: Path, fake_dockerd: list[int]
) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"log-driver": "journald", "live-restore": true}\n')
    path.chmod(0o600)
    engine = DaemonJsonConfigurator(path, tmp_path / "docker.pid")
    want = EngineSettings(insecure=(LAB,), mirrors=("https://mirror.lab",))
    assert await engine.apply(want) is True
    assert json.loads(path.read_text()) == {
        "log-driver": "journald",
        "live-restore": True,
        "insecure-registries": [LAB],
        "registry-mirrors": ["https://mirror.lab"],
    }
    assert path.stat().st_mode & 0o777 == 0o600
    assert fake_dockerd == [signal.SIGHUP]
    inode = path.stat().st_ino
    assert await engine.apply(want) is False  # no change: no write, no signal
    assert path.stat().st_ino == inode and fake_dockerd == [signal.SIGHUP]
    assert [p.name for p in os.scandir(tmp_path) if p.name.startswith(".")] == []  # no temp files left


async def test_a_dockerd_reading_another_file_is_not_signalled(
    tmp_path: Path, fake_dockerd: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    engine = DaemonJsonConfigurator(tmp_path / "other.json", tmp_path / "docker.pid")
    assert await engine.apply(EngineSettings(insecure=(LAB,))) is True
    assert fake_dockerd == [] and "not signalling it" in caplog.text


async def test_daemon_json_that_is_not_json_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{not json")
    engine = DaemonJsonConfigurator(path, tmp_path / "no.pid")
    with pytest.raises(EngineConfigError, match="not valid JSON"):
        await engine.apply(EngineSettings(insecure=(LAB,)))
    assert path.read_text() == "{not json"


async def test_no_dockerd_means_written_but_not_signalled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = DaemonJsonConfigurator(tmp_path / "etc" / "daemon.json", tmp_path / "missing.pid")
    assert await engine.apply(EngineSettings(insecure=(LAB,))) is True
    assert json.loads((tmp_path / "etc" / "daemon.json").read_text()) == {"insecure-registries": [LAB]}
    assert "no running dockerd" in caplog.text


# -- the manager -----------------------------------------------------------------------------


async def test_manager_merges_sources_and_only_reports_changes(tmp_path: Path) -> None:
    local = tmp_path / "registries.yaml"
    local.write_text("search: [local.lab]\n")
    sysconfig = tmp_path / "docker"
    sysconfig.write_text("INSECURE_REGISTRY='--insecure-registry legacy.lab'\n")
    engine = RecordingEngineConfigurator()
    mgr = RegistryManager(engine, local_file=local, legacy_file=sysconfig)
    assert mgr.resolver().candidates("x") == ["x"]  # before any apply: defaults
    assert await mgr.apply(None) is True
    assert mgr.resolver().candidates("x") == ["local.lab/x", "x"]
    assert engine.applied == [EngineSettings(insecure=("legacy.lab",))]
    spec = network_pb2.RegistriesSpec(search=["pushed.lab"], blocked=["docker.io"])
    assert await mgr.apply(spec) is True
    assert mgr.resolver().candidates("x") == ["pushed.lab/x", "local.lab/x"]
    assert await mgr.apply(spec) is False
    assert len(engine.applied) == 1


async def test_manager_keeps_last_good_local_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = tmp_path / "registries.yaml"
    local.write_text("search: [\n")
    mgr = RegistryManager(None, local_file=local)
    with pytest.raises(SettingsError, match="not valid YAML at line"):
        await mgr.apply(None)  # never good: the agent refuses to start
    local.write_text("search: [good.lab]\n")
    await mgr.apply(None)
    local.write_text("search: [\n")
    assert await mgr.reload() is False
    assert mgr.settings.search == ("good.lab",) and "keeping its last good contents" in caplog.text


async def test_manager_survives_an_engine_that_fails(caplog: pytest.LogCaptureFixture) -> None:
    engine = RecordingEngineConfigurator(fail=EngineConfigError("daemon.json is broken"))
    mgr = RegistryManager(engine)
    spec = network_pb2.RegistriesSpec(search=["a.lab"], insecure=["a.lab"])
    assert await mgr.apply(spec) is True
    assert mgr.resolver().candidates("x")[0] == "a.lab/x"
    assert "daemon.json is broken" in caplog.text
    engine.fail = None
    assert await mgr.apply(spec) is True  # retried, now it works
    assert engine.current.insecure == ("a.lab",)


# -- secrets ---------------------------------------------------------------------------------


def test_credentials_never_show_in_repr() -> None:
    r = resolver()
    cred = settings.build(auths=[("a.lab", "bob", "hunter2-secret")], source="t", strict=True).auths[0]
    auth = ImageResolver(settings.merge(RegistrySettings(auths=(cred,)))).auth_for("a.lab/app")
    assert auth is not None and dict(auth) == {
        "username": "bob",
        "password": "hunter2-secret",
        "serveraddress": "a.lab",
    }
    for text in (repr(cred), str(cred), repr(auth), str(auth), repr(r.settings)):
        assert "hunter2" not in text
    hub = ImageResolver(
        settings.merge(settings.build(auths=[("docker.io", "bob", "pw12")], source="t", strict=True))
    )
    hub_auth = hub.auth_for("fedora/apache")
    assert hub_auth is not None and hub_auth["serveraddress"] == "https://index.docker.io/v1/"
    assert hub.auth_for("quay.io/x") is None


def test_a_bad_yaml_file_does_not_quote_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "registries.yaml"
    path.write_text("auths:\n  - registry: a.lab\n    password: 'hunter2-secret\n")
    with pytest.raises(SettingsError) as exc:
        settings.load_file(path)
    assert "hunter2" not in str(exc.value)
