"""mwtui's local stand-ins for Modal's named objects, kept under `MWTUI_HOME` (default ~/.config/mwtui).

- `secrets`: named secrets (`mwtui secret set|list|delete`), one JSON file, mode 0600.
- `volumes`: one folder per volume name, and how a mount path is made to reach it.
- `db`: one SQLite file in WAL mode that every process of every replica shares; `kv` (Dict, Queue) and
  `calls` (spawned function calls) live in it.

Nothing here imports user code or the `modal` stand-in: the sdk calls into the store, not the reverse.
"""
