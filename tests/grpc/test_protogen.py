"""The committed code generated from proto/ is what the pinned protoc makes of it today."""

from __future__ import annotations

from pathlib import Path

from flowplane.grpc import protogen


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    """Regenerates proto/*.proto into a temporary folder and compares it with
    flowplane/grpc/proto/: a .proto edited without `python -m flowplane.grpc.protogen` fails."""
    fresh = protogen.generate(tmp_path)
    assert fresh, "no .proto files were compiled"
    for path in fresh:
        committed = protogen.OUT_DIR / path.name
        assert committed.is_file(), f"{committed.name} is not committed"
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} is stale: run python -m flowplane.grpc.protogen"
        )
    names = {p.name for p in fresh}
    extra = {p.name for p in protogen.OUT_DIR.glob("*_pb2.py*")} - names
    assert not extra, f"generated files without a .proto: {sorted(extra)}"
