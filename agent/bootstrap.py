"""The agent's identity: joining the cluster once, then re-keying before the certificate expires.

Join (first start, kubeadm's token discovery): the agent does not know the
cluster CA yet, so it fetches the chain the coordinator's TLS port presents
without trusting it, keeps the CA whose SubjectPublicKeyInfo hashes to the
pinned --ca-hash (or takes --ca-cert as given), checks that the server's own
certificate is signed by it, and from then on verifies TLS against that CA.
It generates its key locally and sends a CSR with the join token as bearer
credential; the coordinator answers with a certificate for CN = node name.
Key (0600), certificate and CA go to <state-dir>/pki; later starts use them
and ignore the token.

Renewal: at two thirds of the certificate's lifetime the agent sends a new
CSR through a call authenticated by its current certificate, stores the
result and re-creates its channel. The agent's own server re-reads the files
at its next handshake (atoll.tls.ReloadingServerCredentials). A certificate
that expired anyway (the agent was off for long) needs a new join token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pathlib

import grpc

from agent import failover
from agent.leaselane import LeaseLane
from atoll import certinfo, errors, files, pkichild, rpc, tls
from atoll import config as layered
from atoll.agentconfig import DEFAULT_JOIN_PORT
from atoll.aio import wait_or_stop
from atoll.backoff import Backoff
from atoll.v1 import node_api_pb2, node_api_pb2_grpc

log = logging.getLogger(__name__)

# The API channel pings its idle connection this often (other channels: rpc.CLIENT_KEEPALIVE_MS).
# Heartbeats take the lane only while this channel is READY (lease_stub), and while it is idle
# (WatchNode only receives) it leaves READY only when a ping goes unanswered: a node cut off from
# the API's port, but not from the lane's, falls silent within about 15 s, not 35.
API_KEEPALIVE_MS = 10_000


class NodeCredentials:
    """The node's key, its certificate and the cluster CA, under <state-dir>/pki."""

    def __init__(self, directory: pathlib.Path, keys: pkichild.KeyTool | None = None) -> None:
        self.dir = directory
        self.keys: pkichild.KeyTool = pkichild.ChildKeyTool() if keys is None else keys
        self.files = tls.KeyPairFiles(directory / "node.key", directory / "node.crt", directory / "ca.crt")

    def read(self) -> tuple[bytes, bytes, bytes] | None:
        """(key, certificate, CA) when all three exist and belong together; None otherwise."""
        try:
            key, cert, ca = self.files.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ignoring unreadable node credentials in %s: %s", self.dir, exc)
            return None
        return (key, cert, ca) if self._belong(key, cert, thorough=False) else None

    def sound(self) -> bool:
        """Whether cryptography itself takes the key as one that belongs to the certificate: read()
        compares the public halves only, and a key whose private half is damaged would pass it.
        Blocking (a child, atoll.pkichild); once per start."""
        found = self.read()
        return found is not None and self._belong(found[0], found[1], thorough=True)

    def _belong(self, key: bytes, cert: bytes, *, thorough: bool) -> bool:
        """Only a definite answer condemns the pair: a check that cannot run (a child timing out,
        a broken install) keeps it, which TLS then tries, rather than sending the agent to join
        again without a usable token."""
        try:
            if self.keys.key_matches(key, cert, thorough=thorough):
                return True
            log.warning("%s does not belong to %s; ignoring both", self.files.key, self.files.cert)
        except errors.InvalidArgument as exc:
            log.warning("ignoring unreadable node credentials in %s: %s", self.dir, exc)
        except errors.AtollError as exc:
            log.warning("cannot check the node credentials in %s (%s); using them as they are", self.dir, exc)
            return True
        return False

    def lifetime(self) -> certinfo.Lifetime | None:
        found = self.read()
        return certinfo.read_certificate(found[1]).lifetime if found else None

    def save(self, key: bytes, cert: bytes, ca: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        files.write_atomic(self.files.ca, ca, mode=0o644)
        files.write_atomic(self.files.key, key, mode=0o600)
        files.write_atomic(self.files.cert, cert, mode=0o644)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        found = self.read()
        if found is None:
            raise errors.FailedPrecondition(f"no node certificate in {self.dir}")
        key, cert, ca = found
        return tls.channel_credentials(ca, key=key, cert=cert)


def pick_ca(chain: list[bytes], pin: str, where: str, keys: pkichild.KeyTool) -> bytes:
    """The CA in `chain` that matches `pin`, after checking that it signed the server's certificate.
    Blocking: `keys` checks the signature (atoll.pkichild)."""
    certs = [certinfo.read_certificate(pem, f"certificate from {where}") for pem in chain]
    if not certs:
        raise errors.Unavailable(f"{where} presented no certificate")
    for pem, cert in zip(chain, certs, strict=True):
        if cert.pin == pin:
            if not keys.issued_by(chain[0], pem):
                raise errors.Unauthenticated(
                    f"{where}: the CA matching {pin} did not sign the server's certificate"
                )
            return pem
    seen = ", ".join(c.pin for c in certs)
    raise errors.Unauthenticated(
        f"{where} presented no CA matching --ca-hash {pin} (it presented {seen}); "
        "check the hash (coordinator token create prints it) and that you reach the right coordinator"
    )


async def discover_ca(address: str, pin: str, keys: pkichild.KeyTool) -> bytes:
    host, port = layered.split_host_port(address, "join address")
    chain = await asyncio.to_thread(tls.fetch_server_chain, host, port)
    return await asyncio.to_thread(pick_ca, chain, pin, address, keys)


def join_address(coordinator: str, explicit: str) -> str:
    if explicit:
        return explicit
    host, _ = layered.split_host_port(coordinator, "coordinator")
    return f"[{host}]:{DEFAULT_JOIN_PORT}" if ":" in host else f"{host}:{DEFAULT_JOIN_PORT}"


async def join(
    *, node: str, address: str, token: str, pin: str, ca_file: str, credentials: NodeCredentials
) -> None:
    """Exchange the join token for a node certificate (see the module docstring)."""
    if ca_file:
        ca = await asyncio.to_thread(pathlib.Path(ca_file).read_bytes)
        if pin and certinfo.ca_hash(ca) != pin:
            raise errors.Unauthenticated(f"{ca_file} does not match --ca-hash {pin}")
    else:
        ca = await discover_ca(address, pin, credentials.keys)
    key, csr = await asyncio.to_thread(credentials.keys.new_key_and_csr, node)
    channel = rpc.open_channel(address, credentials=tls.channel_credentials(ca, token=token))
    try:
        resp = await rpc.unary(
            node_api_pb2_grpc.NodeServiceStub(channel).Join(
                node_api_pb2.JoinRequest(node_name=node, csr=csr), timeout=30
            )
        )
    finally:
        await channel.close()
    cert = certinfo.read_certificate(resp.certificate, "the node certificate")
    if cert.cn != node or not await asyncio.to_thread(credentials.keys.key_matches, key, resp.certificate):
        raise errors.Internal("the coordinator answered with a certificate for someone else")
    credentials.save(key, resp.certificate, resp.ca_certificate or ca)
    log.info("joined the cluster as node %s; certificate valid until %s", node, cert.not_valid_after_utc)


async def ensure_joined(
    *,
    node: str,
    coordinator: str,
    explicit_join_address: str,
    token: str,
    pin: str,
    ca_file: str,
    credentials: NodeCredentials,
    stop: asyncio.Event,
) -> None:
    """Use the stored certificate, or join with the token; retries while the coordinator is away."""
    lifetime = credentials.lifetime()
    damaged = lifetime is not None and not await asyncio.to_thread(credentials.sound)
    if damaged:
        log.warning("the node key in %s is damaged; joining again with the join token", credentials.dir)
    elif lifetime is not None and not lifetime.expired():
        return
    if not token:
        what = "is damaged" if damaged else "has expired" if lifetime else "is missing"
        raise errors.FailedPrecondition(
            f"the node certificate in {credentials.dir} {what}: join with --join-token and --ca-hash "
            "(coordinator token create prints the command)"
        )
    if not pin and not ca_file:
        raise errors.InvalidArgument(
            "joining needs --ca-hash (or --ca-cert) to know the coordinator is the right one"
        )
    if lifetime is not None and not damaged:
        log.warning(
            "the node certificate expired at %s; joining again with the join token", lifetime.not_after
        )
    # Through each coordinator's token port in turn while they do not answer (one is enough).
    addresses = list(dict.fromkeys(join_address(c, explicit_join_address) for c in coordinator.split(",")))
    backoff = Backoff(initial=0.5, maximum=10.0)
    for attempt in itertools.count():
        address = addresses[attempt % len(addresses)]
        try:
            await join(
                node=node, address=address, token=token, pin=pin, ca_file=ca_file, credentials=credentials
            )
            return
        except (
            errors.Unavailable,
            errors.DeadlineExceeded,
            errors.Conflict,
            errors.ResourceExhausted,
        ) as exc:
            # Transient: the coordinator is away, busy, or many nodes spend the same token at once.
            delay = backoff.next()
            log.warning("joining through %s failed: %s; retrying in %.1fs", address, exc, delay)
            if await wait_or_stop(stop, delay):
                raise errors.Unavailable(f"stopped before joining through {address}") from None


class CoordinatorConnection:
    """The agent's channel to the coordinator it is on; `stub` always names the current one.

    The agent is given one coordinator or several (agent.failover): one
    channel at a time, to `target`; `fail_over` moves it to the next with the
    same credentials, `answered` says the current one works. Without
    credentials (an --insecure coordinator) the channel is plain text.
    """

    def __init__(
        self,
        targets: failover.Targets | str,
        credentials: NodeCredentials | None,
        *,
        remember: pathlib.Path | None = None,
    ) -> None:
        self.targets = targets if isinstance(targets, failover.Targets) else failover.Targets([targets])
        self.credentials = credentials
        self._remember = remember
        self._channel = self._open()
        self.stub = node_api_pb2_grpc.NodeServiceStub(self._channel)
        self.lane = LeaseLane(self._open_to)
        self.renewals = 0
        self._old: list[grpc.aio.Channel] = []
        # Set (and replaced) whenever the channel moves to another coordinator: loops waiting
        # out a backoff on the old one wake and call the new one.
        self.moved = asyncio.Event()
        self._closing: asyncio.Future[None] | None = None

    @property
    def target(self) -> str:
        return self.targets.current

    def _open(self) -> grpc.aio.Channel:
        # One coordinator or several (a:6443,b:6443): a dead one costs a reconnect, not a re-join.
        return self._open_to(self.target, keepalive_ms=API_KEEPALIVE_MS)

    def _open_to(self, address: str, *, keepalive_ms: int = rpc.CLIENT_KEEPALIVE_MS) -> grpc.aio.Channel:
        credentials = None if self.credentials is None else self.credentials.channel_credentials()
        return rpc.coordinator_channel(address, credentials=credentials, keepalive_ms=keepalive_ms)

    @property
    def lease_stub(self) -> node_api_pb2_grpc.NodeServiceStub:
        """Where heartbeats go: the coordinator's heartbeat lane once connected, else the API's
        listener (agent.leaselane). The lane only while the API's channel is up too: a node cut
        off from the API (no status reports, no assignment) must fall silent, as without a lane,
        and not stay Ready on heartbeats alone."""
        lane = self.lane.stub_for(self.target)
        if lane is not None and self._channel.get_state() == grpc.ChannelConnectivity.READY:
            return lane
        return self.stub

    def offer_lease_port(self, port: int, *, on_lane: bool = False, target: str = "") -> None:
        """Coordinator `target` (default: the current one) serves heartbeats on `port` (0: no lane),
        said in an answer that came through the lane (`on_lane`) or the API's listener. An answer
        from a coordinator the link has since left is not about the current one: ignored."""
        if target and target != self.target:
            return
        if on_lane:
            self.lane.answered()
        self.lane.offer(self.target, port)

    def lease_failed(self, why: object, stub: node_api_pb2_grpc.NodeServiceStub) -> None:
        """A heartbeat through `stub` on the lane failed: the next goes to the API's listener."""
        self.lane.failed(why, stub)

    def reopen(self) -> None:
        """A new channel with the current files; calls in flight finish on the old one."""
        self._old.append(self._channel)
        self._channel = self._open()
        self.stub = node_api_pb2_grpc.NodeServiceStub(self._channel)
        self.lane.reopen()

    def fail_over(self, why: object) -> float:
        """The current coordinator did not answer: move to the next one (a new channel, the same
        certificate); returns how long to wait before calling it. Alone, it stays (gRPC reconnects)."""
        before = self.target
        delay = self.targets.failed()
        if self.target != before:
            log.warning(
                "coordinator %s did not answer (%s); moving to %s in %.2fs", before, why, self.target, delay
            )
            self.lane.offer(self.target, 0)  # the old one's lane goes; the new one tells its own
            self.reopen()
            self.moved.set()
            self.moved = asyncio.Event()
            # The old channel's calls fail or finish on their own; it is closed a moment later.
            asyncio.get_running_loop().call_later(max(5.0, delay), self._schedule_close_old)
        return delay

    def answered(self) -> None:
        """The current coordinator answered a call."""
        fresh = self.targets.last_good != self.target
        outage = self.targets.answered()
        if outage is not None and self.targets.several:
            log.info("on coordinator %s after %.2fs without one", self.target, outage)
        if fresh and self._remember is not None:
            try:
                files.write_atomic(self._remember, f"{self.target}\n".encode())
            except OSError as exc:
                log.warning("cannot remember the coordinator in %s: %s", self._remember, exc)

    def _schedule_close_old(self) -> None:
        task = asyncio.ensure_future(self._close_old())
        self._closing = task  # keep a reference until it is done

    async def renew(self, node: str) -> certinfo.Lifetime:
        assert self.credentials is not None
        key, csr = await asyncio.to_thread(self.credentials.keys.new_key_and_csr, node)
        resp = await rpc.unary(
            self.stub.RenewCertificate(
                node_api_pb2.RenewCertificateRequest(node_name=node, csr=csr), timeout=30
            )
        )
        cert = certinfo.read_certificate(resp.certificate, "the renewed certificate")
        if not await asyncio.to_thread(self.credentials.keys.key_matches, key, resp.certificate):
            raise errors.Internal("the coordinator renewed the certificate for another key")
        found = self.credentials.read()
        self.credentials.save(key, resp.certificate, resp.ca_certificate or (found[2] if found else b""))
        self.renewals += 1
        self.reopen()
        lifetime = cert.lifetime
        log.info("renewed the node certificate; valid until %s", lifetime.not_after)
        return lifetime

    async def renew_loop(self, node: str, stop: asyncio.Event) -> None:
        """Re-key at two thirds of the lifetime; on failure retry with backoff until it works."""
        if self.credentials is None:
            return
        backoff = Backoff(initial=0.5, maximum=30.0)
        while not stop.is_set():
            lifetime = self.credentials.lifetime()
            if lifetime is None:
                return
            wait = (lifetime.renew_at - certinfo.now()).total_seconds()
            if wait > 0:
                await wait_or_stop(stop, min(wait, 3600.0))
                continue
            try:
                await self.renew(node)
                backoff.reset()
                # Streams on the old channel (authenticated by the old certificate) move over.
                await wait_or_stop(stop, 2.0)
                await self._close_old()
            except errors.AtollError as exc:
                delay = backoff.next()
                log.warning("renewing the node certificate failed: %s; retrying in %.1fs", exc, delay)
                await wait_or_stop(stop, delay)

    async def _close_old(self) -> None:
        old, self._old = self._old, []
        for channel in old:
            await channel.close()

    async def close(self) -> None:
        await self.lane.close()
        for channel in [*self._old, self._channel]:
            await channel.close()
        self._old = []
