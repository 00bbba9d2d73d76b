"""`coordinator store migrate`: move a stopped single-coordinator cluster into etcd (coordinator.store.migrate)."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys

from atoll import errors, pki


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    store = sub.add_parser(
        "store", help="operate on a coordinator's store directly (the coordinator stopped)"
    )
    verbs = store.add_subparsers(dest="store_command", metavar="VERB")
    verbs.required = True
    mig = verbs.add_parser(
        "migrate",
        help="copy a stopped cluster's store and CA into another store (SQLite to etcd)",
        description="Copy every object, token and lease of a stopped cluster, and its CA, into an empty "
        "store; coordinators started on the target with the same cluster secret serve the same cluster.",
    )
    mig.add_argument("--from", dest="source", required=True, help="sqlite:///PATH of the stopped cluster")
    mig.add_argument("--to", dest="target", required=True, help="etcd://HOST:PORT,...[/PREFIX]")
    mig.add_argument(
        "--data-dir", default="", help="the source coordinator's data dir, for its CA (default: the db's dir)"
    )
    mig.add_argument(
        "--cluster-secret-file", default="", help="the secret the target's coordinators are given"
    )
    mig.add_argument(
        "--ca-cert",
        default="",
        help="the CA certificate, if the source ran with --ca-cert (default: in --data-dir)",
    )
    mig.add_argument("--ca-key", default="", help="its key, if the source ran with --ca-key")
    mig.add_argument("--etcd-cafile", default="")
    mig.add_argument("--etcd-certfile", default="")
    mig.add_argument("--etcd-keyfile", default="")
    mig.add_argument("--force", action="store_true", help="write into a target that already holds keys")


def main(args: argparse.Namespace) -> int:
    from coordinator.auth import sharedca

    try:
        if not args.source.startswith("sqlite://"):
            raise errors.InvalidArgument(f"--from: expected sqlite:///PATH, got {args.source!r}")
        db = pathlib.Path(args.source.removeprefix("sqlite://"))
        if not db.is_file():
            raise errors.InvalidArgument(f"--from: {db} does not exist")
        data_dir = pathlib.Path(args.data_dir) if args.data_dir else db.parent
        ca_cert = pathlib.Path(args.ca_cert) if args.ca_cert else data_dir / "pki" / "ca.crt"
        ca_key = pathlib.Path(args.ca_key) if args.ca_key else data_dir / "pki" / "ca.key"
        extra = {}
        if ca_cert.exists() != ca_key.exists():
            have, missing = (ca_cert, ca_key) if ca_cert.exists() else (ca_key, ca_cert)
            raise errors.InvalidArgument(
                f"found {have} but not {missing}: if the coordinator ran with --ca-cert/--ca-key, "
                "pass the same files here, or the target's coordinators would make another CA "
                "(and every agent would have to join again)"
            )
        if not ca_cert.exists():
            print(
                f"coordinator store migrate: no cluster CA in {data_dir / 'pki'} (an --insecure cluster?): "
                "copying the store only",
                file=sys.stderr,
            )
        if ca_cert.exists() and ca_key.exists():
            if not args.cluster_secret_file:
                raise errors.InvalidArgument(
                    "--cluster-secret-file: needed to carry the cluster CA into the target"
                )
            ca = pki.CertificateAuthority.load(ca_cert.read_bytes(), ca_key.read_bytes())
            extra[sharedca.KEY] = sharedca.seal(sharedca.read_secret(args.cluster_secret_file), ca)
        return asyncio.run(run(args, data_dir, extra))
    except errors.AtollError as exc:
        print(f"coordinator store migrate: {exc}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, data_dir: pathlib.Path, extra: dict[str, bytes]) -> int:
    from coordinator.store.migrate import migrate
    from coordinator.store.open import open_store

    source = await open_store(args.source, data_dir=data_dir, history_limit=1000, synchronous="FULL")
    try:
        target = await open_store(
            args.target,
            data_dir=data_dir,
            history_limit=1000,
            synchronous="FULL",
            etcd_cafile=args.etcd_cafile,
            etcd_certfile=args.etcd_certfile,
            etcd_keyfile=args.etcd_keyfile,
        )
        try:
            report = await migrate(source, target, extra=extra, origin=args.source, force=args.force)
        finally:
            await target.close()
    finally:
        await source.close()
    for kind, n in report.by_kind.items():
        print(f"{kind}: {n}")
    carried = " and the cluster CA" if extra else ""
    print(f"copied {report.keys} keys{carried} to {args.target}")
    return 0
