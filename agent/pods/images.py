"""Getting images onto the node: pull policies, and the infra image.

The infra image only has to sleep. When it is missing and cannot be pulled
(hosts without a registry), the agent builds it from the host's static busybox
with `docker import`, so a fresh node never depends on an external registry.
"""

from __future__ import annotations

import io
import logging
import pathlib
import tarfile

from agent.runtime.base import ContainerRuntime, ImagePullError
from atoll.v1 import pod_pb2

log = logging.getLogger(__name__)


class ImageError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def ensure_image(runtime: ContainerRuntime, ref: str, policy: int) -> bool:
    """Make `ref` present under `policy`; returns True when it pulled. Raises ImageError."""
    if policy == pod_pb2.PULL_POLICY_NEVER:
        if not await runtime.image_present(ref):
            raise ImageError(
                "ErrImageNeverPull", f'image "{ref}" is not present and the pull policy is Never'
            )
        return False
    if policy != pod_pb2.PULL_POLICY_ALWAYS and await runtime.image_present(ref):
        return False
    try:
        await runtime.pull_image(ref)
    except ImagePullError as exc:
        raise ImageError("ErrImagePull", f'failed to pull image "{ref}": {exc.message}') from None
    return True


def _is_static_elf(path: pathlib.Path) -> bool:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    # A dynamically linked executable names its interpreter; a static one does not.
    return b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data and b"ld-musl" not in data


def infra_rootfs(busybox: pathlib.Path) -> bytes:
    if not busybox.exists():
        raise ImageError("InfraImageMissing", f"{busybox} does not exist (install busybox-static)")
    if not _is_static_elf(busybox):
        raise ImageError(
            "InfraImageMissing", f"{busybox} is not a static executable (install busybox-static)"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755 if name != "tmp" else 0o1777
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


# Debian's busybox-static installs /bin/busybox; Fedora's busybox is /usr/sbin/busybox.
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox", "/sbin/busybox")


def find_static_busybox(configured: str) -> pathlib.Path:
    if configured:
        return pathlib.Path(configured)
    for candidate in BUSYBOX_CANDIDATES:
        path = pathlib.Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    return pathlib.Path(BUSYBOX_CANDIDATES[0])


async def ensure_infra_image(runtime: ContainerRuntime, ref: str, busybox: pathlib.Path) -> None:
    if await runtime.image_present(ref):
        return
    try:
        await runtime.pull_image(ref)
        return
    except ImagePullError as exc:
        log.info("cannot pull infra image %s (%s); building it from %s", ref, exc.message, busybox)
    await runtime.import_image(infra_rootfs(busybox), ref, ('CMD ["/bin/busybox", "sleep", "2147483647"]',))
