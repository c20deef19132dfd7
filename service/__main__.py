"""``python -m service [--host H] [--port P] [--repository DIR] [--backend embedded|triton]``."""

from __future__ import annotations

import argparse
import os

import uvicorn

from service.app import create_app
from service.http.server import server_config
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse flags (overriding HRNET_* settings) and serve with uvicorn, configured by
    :func:`service.http.server.server_config` (the same function the tests serve with)."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--repository")
    parser.add_argument("--backend", choices=["embedded", "triton"])
    parser.add_argument("--triton-url")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--log-level")
    args = parser.parse_args(argv)
    overrides = {
        k: v for k, v in {
            "host": args.host, "port": args.port, "repository": args.repository,
            "backend": args.backend, "triton_url": args.triton_url, "log_level": args.log_level,
        }.items() if v is not None
    }
    settings = Settings(**overrides)
    if args.workers > 1:
        # Workers import the app themselves; pass overrides through the environment.
        for k, v in overrides.items():
            os.environ[f"HRNET_{k.upper()}"] = str(v)
        config = server_config("service.app:create_app", settings, factory=True,
                               workers=args.workers)
    else:
        config = server_config(create_app(settings), settings)
    server = uvicorn.Server(config)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
    else:
        server.run()


if __name__ == "__main__":
    main()
