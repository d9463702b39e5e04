"""What a process holds in memory, honestly: its resident set (RSS) counts every page it can reach,
shared ones too, so 15 replicas forked from one snapshot would count the snapshot's pages 15 times.

- USS (unique set size): the pages only this process holds; what one more replica costs. The
  screen's `mem` column and `memory_bytes` in `/api/endpoints` are the USS of a replica's process tree.
- PSS (proportional set size): each shared page divided among the processes that share it; summed
  over every process of mwtui, the whole of its memory, shared pages once. The header shows it.

Both come from one read of /proc/PID/smaps_rollup (Linux 4.14+), about as cheap as reading RSS; where
it cannot be read (another OS, an older kernel), all three fall back to RSS.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Held:
    rss: int = 0
    uss: int = 0
    pss: int = 0

    def __add__(self, other: Held) -> Held:
        return Held(self.rss + other.rss, self.uss + other.uss, self.pss + other.pss)


def held(pid: int) -> Held:
    """What process `pid` holds; zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            fields = {}
            for line in f:
                name, _, rest = line.partition(b":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[name] = int(parts[0]) * 1024  # kB
        rss = fields.get(b"Rss", 0)
        uss = fields.get(b"Private_Clean", 0) + fields.get(b"Private_Dirty", 0) + fields.get(b"Private_Hugetlb", 0)
        return Held(rss, uss, fields.get(b"Pss", rss))
    except FileNotFoundError:
        return Held()
    except OSError:
        pass
    try:
        rss = psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return Held()
    return Held(rss, rss, rss)


def tree_pss(root: int, children_of: dict[int, list[int]]) -> int:
    """PSS summed over `root` and every descendant: the whole of what they hold, shared pages once."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += held(pid).pss
        todo.extend(children_of.get(pid, ()))
    return total
