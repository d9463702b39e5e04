"""`python -m mwtui.engine.gateway --host 127.0.0.1 --port 8470`: run the gateway until stdin closes."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..lifeline import watch_parent


def main(argv: list[str] | None = None) -> int:
    watch_parent()  # first: if mwtui dies while we start, we must not linger
    parser = argparse.ArgumentParser(prog="python -m mwtui.engine.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470, help="0 picks a free port")
    args = parser.parse_args(argv)

    from .server import serve

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(serve(args.host, args.port))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
