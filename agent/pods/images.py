"""Getting images onto the node: pull policies, registry search, and the infra image.

An image name a pod gives may stand for several registries' images: the
ImageResolver (agent.registries) turns it into candidates in search order,
each with its credentials, and leaves out blocked registries. ensure_image
looks for each candidate locally first (unless the policy is Always), so a
locally built `fedora/apache` runs with no registry at all, then pulls them
in order until one succeeds. The name that was found or pulled is the one the
container runs; a pod whose image cannot be had waits with ErrImagePull and the
last registry's own message, plus which registries were tried. Credentials go
to the runtime only; messages pass through the resolver's redaction.

The infra image only has to sleep. When it is missing and cannot be pulled
(hosts without a registry), the agent builds it from the host's static busybox
with `docker import`, so a fresh node never depends on an external registry.
"""

from __future__ import annotations

import io
import logging
import pathlib
import tarfile
from dataclasses import dataclass

from agent.registries.resolve import DEFAULT_RESOLVER, ImageBlockedError, ImageResolver, Resolution
from agent.runtime.base import ContainerRuntime, ImagePullError
from atoll.v1 import pod_pb2

log = logging.getLogger(__name__)


class ImageError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageResult:
    """`ref` is the name to run: the candidate that was found locally or pulled."""

    ref: str
    pulled: bool


def _tried(resolution: Resolution) -> str:
    """` (tried a, docker.io; blocked: b)`, or nothing when the name had one obvious source."""
    cands = resolution.candidates
    if len(cands) == 1 and cands[0].ref == resolution.ref and not resolution.skipped:
        return ""
    text = f" (tried {', '.join(resolution.registries)}"
    if resolution.skipped:
        text += f"; blocked: {', '.join(resolution.skipped)}"
    return text + ")"


async def ensure_image(
    runtime: ContainerRuntime, ref: str, policy: int, resolver: ImageResolver | None = None
) -> ImageResult:
    """Make an image for `ref` present under `policy`; says which name to run. Raises ImageError."""
    resolver = resolver or DEFAULT_RESOLVER
    try:
        resolution = resolver.resolve(ref)
    except ImageBlockedError as exc:
        raise ImageError("ErrImagePull", f'failed to pull image "{ref}": {exc.message}') from None
    names = [c.ref for c in resolution.candidates]
    if policy != pod_pb2.PULL_POLICY_ALWAYS:
        for name in names:
            if await runtime.image_present(name):
                return ImageResult(name, pulled=False)
    if policy == pod_pb2.PULL_POLICY_NEVER:
        looked = "" if names == [ref] else f" (looked for {', '.join(names)})"
        raise ImageError(
            "ErrImageNeverPull", f'image "{ref}" is not present{looked} and the pull policy is Never'
        )
    last = ""
    for cand in resolution.candidates:
        try:
            await runtime.pull_image(cand.ref, resolver.auth_for(cand.ref))
        except ImagePullError as exc:
            last = resolver.redact(exc.message)
            log.info("pulling %s from %s failed: %s", cand.ref, cand.registry, last)
            continue
        return ImageResult(cand.ref, pulled=True)
    raise ImageError("ErrImagePull", f'failed to pull image "{ref}"{_tried(resolution)}: {last}')


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
    """The infra image: present, else built offline from a static busybox, else pulled."""
    if await runtime.image_present(ref):
        return
    try:
        rootfs = infra_rootfs(busybox)
    except ImageError as exc:
        log.info("cannot build infra image %s (%s); pulling it", ref, exc.message)
        await runtime.pull_image(ref)
        return
    await runtime.import_image(rootfs, ref, ('CMD ["/bin/busybox", "sleep", "2147483647"]',))
    log.info("built infra image %s from %s", ref, busybox)
