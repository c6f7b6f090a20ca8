"""Compile `proto/*.proto` (the core <-> xDS worker messages) into `flowplane/grpc/proto/`.

    python -m flowplane.grpc.protogen            # regenerate in place
    python -m flowplane.grpc.protogen --out DIR  # write elsewhere (the staleness test does)

Uses grpcio-tools' bundled protoc (a dev/test dependency, pinned in pyproject.toml), so the
generated code matches the protobuf runtime the project pins. Only messages are generated (no
gRPC stubs: the core and its workers speak length-prefixed frames over a Unix socket).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "proto"


def generate(out: Path = OUT_DIR) -> list[Path]:
    """Write `<name>_pb2.py` and `<name>_pb2.pyi` for every file in `proto/`; returns them.

    Raises RuntimeError if protoc fails or grpcio-tools is not installed.
    """
    try:
        from grpc_tools import protoc
    except ImportError:
        raise RuntimeError("grpcio-tools is not installed: pip install -e '.[dev]'") from None
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}"]
    if protoc.main([*args, *(str(s) for s in sources)]) != 0:
        raise RuntimeError("protoc failed")
    return sorted(p for s in sources for p in out.glob(f"{s.stem}_pb2.py*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    for path in generate(ap.parse_args().out):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
