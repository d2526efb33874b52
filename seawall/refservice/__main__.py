"""Run the reference service: ``python3 -m seawall.refservice --config FILE``.

One uvicorn worker per systemd unit, on a socket this module opens with
IPPROTO_TCP: asyncio then sets TCP_NODELAY on each accepted connection. (uvicorn
0.17's own ``--workers`` socket is opened with protocol 0, so Nagle stays on and
every keep-alive request after the first waits ~40 ms for a delayed ACK.)

Readiness and shutdown are told to systemd (``Type=notify``): READY=1 once the
socket is listening, STOPPING=1 on SIGTERM, after which uvicorn stops accepting,
lets in-flight requests finish and closes idle keep-alive connections.
"""

import argparse
import os
import socket
from typing import Any

import uvicorn

from seawall.refservice import config as service_config
from seawall.refservice.app import create_app
from seawall.runtime import jsonlog


def sd_notify(state: str) -> None:
    """Tell systemd ``state`` (no-op outside a Type=notify unit)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


def listen(bind: str, port: int, backlog: int = 1024) -> socket.socket:
    """Open the listening socket with IPPROTO_TCP (see the module docstring)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        sd_notify("READY=1")

    def handle_exit(self, sig: int, frame: Any) -> None:
        sd_notify("STOPPING=1")
        super().handle_exit(sig, frame)


def main() -> None:
    parser = argparse.ArgumentParser(description="The seawall reference service.")
    parser.add_argument("--config", required=True, help="JSON settings file from the deploy")
    args = parser.parse_args()
    config = service_config.load(args.config)
    jsonlog.configure(config.service)
    sock = listen(config.bind, config.port)
    server = Server(
        uvicorn.Config(
            create_app(config),
            log_config=None,
            access_log=False,
            http="h11",
            lifespan="off",
            server_header=False,
            timeout_keep_alive=75,
        )
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
