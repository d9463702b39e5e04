"""The gateway process: mwtui's one listening port, a reverse proxy in front of every replica pool.

Run as `python -m mwtui.engine.gateway --host H --port P`; the engine talks to it only through JSON
lines on stdin/stdout (see `control`). Importing this package starts nothing.
"""

from .native import choose

# The compiled hot path if it is built from these very sources, else the sources (see native.py).
MODE = choose()
