"""`python -m mwtui.engine.gateway --host 127.0.0.1 --port 8470`: run the gateway until stdin closes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from ..lifeline import watch_parent
from .limits import Limits, add_arguments

# Each proxied request holds two descriptors (client and replica); 1000 concurrent clients, their
# replica connections and the listeners need a few thousand. Below this we say so.
OPEN_FILES_WANTED = 65536
OPEN_FILES_ENOUGH = 4096


def raise_open_files() -> int | None:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit allows; return the limit now in force,
    and warn on stderr if it stays too low for the load mwtui promises."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(OPEN_FILES_WANTED, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            print(f"mwtui gateway: cannot raise the open-file limit from {soft} to {target}: {e}", file=sys.stderr)
    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES_ENOUGH:
        print(
            f"mwtui gateway: the open-file limit is {soft} (hard limit {hard}), so only about {soft // 2} "
            "requests can be proxied at once; raise it (ulimit -n, or the hard limit as root) for more",
            file=sys.stderr,
        )
    return None if soft == resource.RLIM_INFINITY else soft


def main(argv: list[str] | None = None) -> int:
    watch_parent()  # first: if mwtui dies while we start, we must not linger
    parser = argparse.ArgumentParser(prog="python -m mwtui.engine.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8470, help="0 picks a free port")
    parser.add_argument(
        "--tokens", default=None, metavar="FILE",
        help="proxy-auth token file (default $MWTUI_HOME/tokens.json, MWTUI_HOME defaulting to ~/.config/mwtui)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="compile the gateway's hot path with mypyc (less CPU per request), then exit",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.compile:
        from .native import compile_here

        return compile_here()
    open_files = raise_open_files()

    from .auth import load_token_check
    from .server import serve

    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    gc.freeze()  # what is loaded by now lives as long as the process: the collector need not walk it
    try:
        return loop.run_until_complete(
            serve(args.host, args.port, Limits.from_args(args), load_token_check(args.tokens), open_files)
        )
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
