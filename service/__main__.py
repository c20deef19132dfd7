"""``python -m service [--host H] [--port P] [--repository DIR] [--backend embedded|triton]``."""

from __future__ import annotations

import argparse

import uvicorn

from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse flags (overriding HRNET_* settings) and serve with uvicorn."""
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
        import os

        for k, v in overrides.items():
            os.environ[f"HRNET_{k.upper()}"] = str(v)
        uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=args.workers, log_level=settings.log_level)
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=settings.log_level)


if __name__ == "__main__":
    main()
