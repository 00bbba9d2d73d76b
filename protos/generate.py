"""Generate the Python gRPC package from protos/ (the one documented step).

Run through `make proto`. Output goes to atoll/v1/ (messages, stubs and .pyi
type stubs); nothing there is edited by hand. `make check-proto` regenerates
into a temporary tree and fails if the committed code differs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "atoll/v1"
HEADER = '"""Generated from protos/atoll/v1 by protos/generate.py. Do not edit."""\n'


def generate(out: pathlib.Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / PACKAGE / "__init__.py").write_text(HEADER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=pathlib.Path, default=ROOT, help="output root (default: the repository)"
    )
    args = parser.parse_args()
    generate(args.out)
    print(f"generated {PACKAGE} into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
