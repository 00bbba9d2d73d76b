#!/usr/bin/env python3
"""Build Atoll's demo images into a Docker engine without any registry.

The test bed and `make up` need a few small images (a generic busybox and a
web server that pretends to be Apache) on engines that must never pull from
the network. Each image is made with `docker import` from a rootfs built in
memory around the host's static busybox (Debian's busybox-static), so the
result is tiny, needs no base image and is identical on every machine.

Usable as a module (`ensure_images(client)`) and as a script::

    python scripts/demo_images.py --docker-host unix:///path/docker.sock [--only NAME] [--force]

Only the standard library and the docker SDK are used, so the script runs
from a bare venv on any host.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

log = logging.getLogger("atoll.demo_images")

#: Where Debian's busybox-static installs its binary.
DEFAULT_BUSYBOX = Path("/bin/busybox")

#: Applets that get a symlink in /bin. Intersected with what the binary
#: actually provides (`busybox --list`), so a smaller build still works.
_COMMON_APPLETS_TEXT = """
sh ash cat chmod chown cp date dd df dirname du echo env false find grep head hostname httpd id ip
ifconfig kill ln ls mkdir mktemp mount mv nc netstat nslookup printf ps pwd readlink rm rmdir sed
seq sleep sort stat tail tar tee test timeout top touch tr true umount uname uniq vi wc wget which
whoami xargs yes ping ping6 route basename expr awk base64 md5sum sha256sum hexdump od less more
free uptime watch
"""
COMMON_APPLETS: tuple[str, ...] = tuple(_COMMON_APPLETS_TEXT.split())

#: Directories every image has (besides /tmp, which is world-writable).
_BASE_DIRS_TEXT = "bin sbin usr usr/bin usr/sbin etc root home var proc sys dev run"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Label put on every image this script builds, so they can be told apart
#: from anything else in an engine.
BUILDER_LABEL = "org.atoll.demo-image"

# -v logs each request to stderr, so `coordinator logs` has something to show.
HTTPD_COMMAND = "httpd -f -v -p 80 -h /var/www"

APACHE_INDEX = b"""<!DOCTYPE html>
<html>
<head><title>Apache on Atoll</title></head>
<body><h1>Apache on Atoll</h1><p>It works! (busybox httpd in an Atoll demo image)</p></body>
</html>
"""


class NotStaticError(RuntimeError):
    """The busybox binary would not run in an empty rootfs."""


@dataclass(frozen=True)
class DemoImage:
    """One image: its name, default command and the files it adds to the busybox rootfs."""

    name: str
    cmd: tuple[str, ...]
    description: str
    workdir: str = "/"
    expose: tuple[str, ...] = ()
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def changes(self) -> list[str]:
        """Dockerfile instructions for `docker import --change`, i.e. the image config."""
        out = [f"CMD {json.dumps(list(self.cmd))}", f"WORKDIR {self.workdir}"]
        out += [f"ENV {key}={value}" for key, value in {"PATH": DEFAULT_PATH, **self.env}.items()]
        out += [f"EXPOSE {port}" for port in self.expose]
        out.append(
            f'LABEL {BUILDER_LABEL}="{self.name}" org.opencontainers.image.description="{self.description}"'
        )
        return out


IMAGES: dict[str, DemoImage] = {
    image.name: image
    for image in (
        DemoImage(
            name="atoll/busybox:latest",
            cmd=("sh",),
            description="busybox userland for Atoll tests",
        ),
        DemoImage(
            name="fedora/apache:latest",
            # busybox httpd in the foreground on port 80 serving /var/www. As
            # PID 1 it would ignore SIGTERM (no handler, and PID 1 gets no
            # default actions), making every `docker stop` wait out its grace
            # period; the shell turns SIGTERM/SIGINT into a clean exit 0, as
            # a real Apache's graceful stop would.
            cmd=("sh", "-c", f"trap 'exit 0' TERM INT; {HTTPD_COMMAND} & wait"),
            description="busybox httpd posing as Apache for Atoll demos",
            workdir="/var/www",
            expose=("80/tcp",),
            files={"var/www/index.html": APACHE_INDEX},
        ),
    )
}


def canonical_name(name: str) -> str:
    """`fedora/apache` and `fedora/apache:latest` name the same image."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def check_static(path: Path) -> None:
    """Fail unless `path` is an ELF executable without a program interpreter.

    A dynamically linked busybox would import fine but every container would
    die with a confusing "no such file or directory" for the missing loader,
    so refuse early and say what to install.
    """
    hint = "install Debian's busybox-static (scripts/install-deps.sh) which provides a static /bin/busybox"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotStaticError(f"cannot read busybox at {path}: {exc}; {hint}") from exc
    if data[:4] != b"\x7fELF":
        raise NotStaticError(f"{path} is not an ELF executable; {hint}")
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(f"{endian}Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(f"{endian}HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(f"{endian}I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(f"{endian}HH", data, 0x2A)
    pt_interp = 3
    for i in range(phnum):
        (p_type,) = struct.unpack_from(f"{endian}I", data, phoff + i * phentsize)
        if p_type == pt_interp:
            raise NotStaticError(f"{path} is dynamically linked (it has a PT_INTERP header); {hint}")


def available_applets(busybox: Path) -> list[str]:
    """The common applets this busybox build provides."""
    try:
        out = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s --list failed (%s); linking the default applet set", busybox, exc)
        return list(COMMON_APPLETS)
    provided = set(out.split())
    return [applet for applet in COMMON_APPLETS if applet in provided]


def build_rootfs_tar(image: DemoImage, busybox: Path = DEFAULT_BUSYBOX) -> bytes:
    """An uncompressed tar of the image's root filesystem, built in memory."""
    check_static(busybox)
    # A fixed mtime makes the layer identical on every host and every run.
    now = int(busybox.stat().st_mtime)
    buf = io.BytesIO()

    def add(name: str, kind: bytes, *, mode: int, data: bytes = b"", target: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = now
        info.linkname = target
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    dirs = _BASE_DIRS_TEXT.split()
    for path in image.files:
        parts = path.split("/")[:-1]
        dirs += ["/".join(parts[: i + 1]) for i in range(len(parts))]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in dict.fromkeys(dirs):
            add(d, tarfile.DIRTYPE, mode=0o755)
        add("tmp", tarfile.DIRTYPE, mode=0o1777)
        add("bin/busybox", tarfile.REGTYPE, mode=0o755, data=busybox.read_bytes())
        for applet in available_applets(busybox):
            add(f"bin/{applet}", tarfile.SYMTYPE, mode=0o777, target="busybox")
        add(
            "etc/passwd",
            tarfile.REGTYPE,
            mode=0o644,
            data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        add("etc/group", tarfile.REGTYPE, mode=0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
        for path, data in sorted(image.files.items()):
            add(path, tarfile.REGTYPE, mode=0o644, data=data)
    return buf.getvalue()


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_image(client: docker.DockerClient, image: DemoImage, busybox: Path = DEFAULT_BUSYBOX) -> str:
    """Import one image into the engine behind `client`; returns its id."""
    repository, tag = image.name.rsplit(":", 1)
    data = build_rootfs_tar(image, busybox)
    raw: Any = client.api.import_image_from_data(
        data, repository=repository, tag=tag, changes=image.changes()
    )
    # The engine answers with a JSON progress stream; an error shows up in it
    # rather than as an HTTP status.
    for line in str(raw).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise RuntimeError(f"importing {image.name} failed: {message['error']}")
    return str(client.images.get(image.name).id)


def ensure_images(
    client: docker.DockerClient,
    *,
    only: Iterable[str] | None = None,
    force: bool = False,
    busybox: Path = DEFAULT_BUSYBOX,
) -> list[tuple[str, str]]:
    """Make sure the demo images exist; returns `(name, "built" | "present")` per image.

    Images already in the engine are left alone unless `force`, so calling
    this on every test-bed start costs one inspect per image.
    """
    if only is None:
        selected = list(IMAGES.values())
    else:
        selected = []
        for name in only:
            key = canonical_name(name)
            if key not in IMAGES:
                raise ValueError(f"unknown demo image {name!r}; known: {', '.join(sorted(IMAGES))}")
            selected.append(IMAGES[key])
    results = []
    for image in selected:
        if not force and image_exists(client, image.name):
            log.info("%s already present, skipped", image.name)
            results.append((image.name, "present"))
            continue
        image_id = build_image(client, image, busybox)
        log.info("built %s (%s)", image.name, image_id[:19])
        results.append((image.name, "built"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        help="engine URL, e.g. unix:///path/docker.sock (default: $DOCKER_HOST or the system socket)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"build only this image (repeatable): {', '.join(IMAGES)}",
    )
    parser.add_argument("--force", action="store_true", help="rebuild images that already exist")
    parser.add_argument(
        "--busybox", type=Path, default=DEFAULT_BUSYBOX, help="static busybox to put in the images"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        check_static(args.busybox)
        client = docker.DockerClient(base_url=args.docker_host, timeout=60)
        try:
            for name, action in ensure_images(client, only=args.only, force=args.force, busybox=args.busybox):
                note = "built" if action == "built" else "already present, skipped (use --force to rebuild)"
                print(f"{name}: {note}")
        finally:
            client.close()
    except (NotStaticError, ValueError, RuntimeError, docker.errors.DockerException) as exc:
        print(f"demo_images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
