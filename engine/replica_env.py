"""The variables mwtui gives every replica besides Modal's own (see modal_env.py): their names, shared
by the engine, which sets them, and the sdk inside the replica, which reads them.
"""

from __future__ import annotations

WEB_URLS = "MWTUI_WEB_URLS"  # JSON: endpoint name -> its URL, for `Function.get_web_url()`
GATEWAY = "MWTUI_GATEWAY"  # "127.0.0.1:PORT": where the replica's calls to other pools go
CALL_TOKEN = "MWTUI_CALL_TOKEN"  # this run's secret: a call carries pickles (code), so only replicas may send one
POOL = "MWTUI_POOL"  # the engine's name for the replica's pool (`a:api` when several apps are served)
APP = "MWTUI_APP"  # the name of the app the replica serves (an `App()` without one goes by its file's)
