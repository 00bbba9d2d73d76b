"""Which registries an image name may come from, in which order, with which credentials (pure).

Docker's rule decides whether a name is qualified: its first `/`-separated
component names a registry when it contains `.` or `:`, is `localhost`, or
has upper-case letters (`kubernetes.lab.com:5000/fedora/apache`). A
qualified name is used as is. An unqualified one (`fedora/apache`,
`busybox:1.36`) is tried at each search registry in order
(`kubernetes.lab.com:5000/fedora/apache`), then at Docker Hub, RHEL's
ADD_REGISTRY behaviour. Docker Hub's candidate is the name as written: the
Engine stores `fedora/apache` and `docker.io/fedora/apache` as one image, so a
locally built `fedora/apache` is found under the name pods use.

Blocked registries are never candidates. When nothing is left the name fails
with ImageBlockedError, whose message the pod shows (waiting reason
ErrImagePull, then ImagePullBackOff: the retry picks up changed settings).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from agent.registries.settings import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    DOCKER_HUB_AUTH_ADDRESS,
    Credential,
    RegistrySettings,
)

BLOCKED_MESSAGE = "registry {registry} is blocked by the node's registry settings"


class ImageBlockedError(Exception):
    """No allowed registry may serve the image; `message` says which were blocked."""

    def __init__(self, ref: str, message: str) -> None:
        super().__init__(message)
        self.ref = ref
        self.message = message


def split_registry(ref: str) -> tuple[str | None, str]:
    """`reg:5000/a/b:1` -> (`reg:5000`, `a/b:1`); `a/b:1` -> (None, `a/b:1`). Docker's rule."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, rest
    return None, ref


def registry_of(ref: str) -> str:
    """The canonical registry an image reference points at (`docker.io` for unqualified names)."""
    registry, _ = split_registry(ref)
    if registry is None:
        return DOCKER_HUB
    registry = registry.lower()
    return DOCKER_HUB if registry in DOCKER_HUB_ALIASES else registry


@dataclass(frozen=True)
class Candidate:
    ref: str
    registry: str


@dataclass(frozen=True)
class Resolution:
    """Where `ref` may come from: candidates in order; `skipped` are blocked registries left out."""

    ref: str
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...] = ()

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(c.registry for c in self.candidates)


class AuthConfig(Mapping[str, str]):
    """The `auth_config` of one pull: a read-only mapping whose repr hides the password.

    Handed to ContainerRuntime.pull_image. Whoever logs or formats it by
    accident prints `AuthConfig(username@registry)`, never the secret.
    """

    __slots__ = ("_data",)

    def __init__(self, credential: Credential) -> None:
        address = DOCKER_HUB_AUTH_ADDRESS if credential.registry == DOCKER_HUB else credential.registry
        self._data = {
            "username": credential.username,
            "password": credential.password,
            "serveraddress": address,
        }

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"AuthConfig({self._data['username']}@{self._data['serveraddress']})"

    __str__ = __repr__


# Refs remembered per resolver: the images a node runs, with room to spare.
RESOLVED_CACHE = 1024


class ImageResolver:
    """Immutable view of one set of effective settings; cheap to build, safe to share."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self._auths = {c.registry: c for c in self.settings.auths}
        self._secrets = sorted({c.password for c in self.settings.auths if c.password}, key=len, reverse=True)
        # What each ref resolved to: the settings never change, and every container start asks.
        self._resolved: dict[str, Resolution | str] = {}  # str: why it is blocked

    def blocked_reason(self, ref: str) -> str | None:
        """Why a qualified `ref` may not be used, None if it may (unqualified: see `resolve`)."""
        registry, _ = split_registry(ref)
        if registry is None:
            return None
        canonical = registry_of(ref)
        if self.settings.is_blocked(canonical):
            return BLOCKED_MESSAGE.format(registry=canonical)
        return None

    def resolve(self, ref: str) -> Resolution:
        """The candidates for `ref`, in the order to try them. Raises ImageBlockedError."""
        found = self._resolved.get(ref)
        if found is None:
            try:
                found = self._resolve(ref)
            except ImageBlockedError as exc:
                found = exc.message  # the message, not the exception: its traceback holds frames
            if len(self._resolved) >= RESOLVED_CACHE:
                self._resolved.clear()
            self._resolved[ref] = found
        if isinstance(found, str):
            raise ImageBlockedError(ref, found)
        return found

    def _resolve(self, ref: str) -> Resolution:
        registry, _ = split_registry(ref)
        if registry is not None:
            reason = self.blocked_reason(ref)
            if reason is not None:
                raise ImageBlockedError(ref, reason)
            return Resolution(ref, (Candidate(ref, registry_of(ref)),))
        candidates: list[Candidate] = []
        skipped: list[str] = []
        search = list(self.settings.search)
        if DOCKER_HUB not in search:
            search.append(DOCKER_HUB)
        for reg in search:
            if self.settings.is_blocked(reg):
                skipped.append(reg)
            elif reg == DOCKER_HUB:
                candidates.append(Candidate(ref, DOCKER_HUB))
            else:
                candidates.append(Candidate(f"{reg}/{ref}", reg))
        if not candidates:
            blocked = ", ".join(skipped)
            verb = "is" if len(skipped) == 1 else "are"
            raise ImageBlockedError(
                ref,
                f"registry {blocked} {verb} blocked by the node's registry settings "
                "and no search registry may serve it",
            )
        return Resolution(ref, tuple(candidates), tuple(skipped))

    def candidates(self, ref: str) -> list[str]:
        """The names to look for and pull, in order. Raises ImageBlockedError."""
        return [c.ref for c in self.resolve(ref).candidates]

    def auth_for(self, ref: str) -> AuthConfig | None:
        """The credentials to pull `ref` (a candidate) with, if its registry has some."""
        cred = self._auths.get(registry_of(ref))
        return AuthConfig(cred) if cred is not None else None

    def redact(self, text: str) -> str:
        """`text` with every configured password replaced: error messages pass through here."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


DEFAULT_RESOLVER = ImageResolver()
