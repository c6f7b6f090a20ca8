"""Run as a subprocess: a grpcio server on PORT and a grpcio xDS client that resolves
`xds:///TARGET` through Flowplane (GRPC_XDS_BOOTSTRAP_CONFIG is set by the caller), then makes
one unary call. Prints the reply; exits non-zero on failure."""

from __future__ import annotations

import sys
from concurrent import futures

import grpc


def main() -> int:
    port, target = int(sys.argv[1]), sys.argv[2]
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {"Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"echo:" + req)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        with grpc.insecure_channel(f"xds:///{target}") as channel:
            call = channel.unary_unary("/test.Echo/Call")
            reply = call(b"hello", timeout=20, wait_for_ready=True)
            print(reply.decode())
            return 0 if reply == b"echo:hello" else 1
    finally:
        server.stop(0)


if __name__ == "__main__":
    sys.exit(main())
