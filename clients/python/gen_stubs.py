"""Regenerates the gRPC stubs in oni_env/_proto from proto/oni/v1/env_hub.proto.

    python gen_stubs.py            # rewrite the shipped stubs
    python gen_stubs.py --check    # exit 1 if the shipped stubs differ from the .proto

Needs grpcio-tools (the version pinned in pyproject.toml's `dev` extra)."""

import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_DIR = HERE.parent.parent / "proto" / "proto" / "oni" / "v1"
OUT = HERE / "oni_env" / "_proto"
FILES = ("env_hub_pb2.py", "env_hub_pb2_grpc.py")


def generate(into: pathlib.Path) -> None:
    from grpc_tools import protoc

    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={into}", f"--grpc_python_out={into}", str(PROTO_DIR / "env_hub.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    grpc_file = into / "env_hub_pb2_grpc.py"
    # the stubs live inside a package: import their sibling relatively
    grpc_file.write_text(grpc_file.read_text().replace("import env_hub_pb2 as", "from . import env_hub_pb2 as"))


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            generate(pathlib.Path(d))
            stale = [f for f in FILES if (pathlib.Path(d) / f).read_text() != (OUT / f).read_text()]
        if stale:
            print(f"stale stubs {stale}: run `python clients/python/gen_stubs.py`", file=sys.stderr)
            return 1
        print("stubs match proto/oni/v1/env_hub.proto")
        return 0
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
