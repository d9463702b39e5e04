"""Dict and Queue contents, by name, in the shared store. Keys and values are bytes (the sdk pickles)."""

from __future__ import annotations

from .db import transaction

DEFAULT_PARTITION = ""


class DictStore:
    """One named dict. Keys compare by their serialized bytes, as on Modal."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, key: bytes) -> bytes | None:
        with transaction(write=False) as c:
            row = c.execute("SELECT value FROM dict_items WHERE dict=? AND key=?", (self.name, key)).fetchone()
        return None if row is None else row[0]

    def put(self, key: bytes, value: bytes, *, skip_if_exists: bool = False) -> bool:
        with transaction() as c:
            if skip_if_exists:
                cur = c.execute(
                    "INSERT OR IGNORE INTO dict_items (dict, key, value) VALUES (?, ?, ?)", (self.name, key, value)
                )
                return cur.rowcount > 0
            self._upsert(c, [(key, value)])
        return True

    def update(self, items: list[tuple[bytes, bytes]]) -> None:
        with transaction() as c:
            self._upsert(c, items)

    def _upsert(self, c, items: list[tuple[bytes, bytes]]) -> None:  # noqa: ANN001
        # An upsert keeps the row (and so the key's place in iteration order), like a Python dict.
        c.executemany(
            "INSERT INTO dict_items (dict, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (dict, key) DO UPDATE SET value=excluded.value",
            [(self.name, k, v) for k, v in items],
        )

    def pop(self, key: bytes) -> bytes | None:
        with transaction() as c:
            row = c.execute("SELECT value FROM dict_items WHERE dict=? AND key=?", (self.name, key)).fetchone()
            if row is not None:
                c.execute("DELETE FROM dict_items WHERE dict=? AND key=?", (self.name, key))
        return None if row is None else row[0]

    def contains(self, key: bytes) -> bool:
        return self.get(key) is not None

    def len(self) -> int:
        with transaction(write=False) as c:
            return c.execute("SELECT COUNT(*) FROM dict_items WHERE dict=?", (self.name,)).fetchone()[0]

    def clear(self) -> None:
        with transaction() as c:
            c.execute("DELETE FROM dict_items WHERE dict=?", (self.name,))

    def items(self) -> list[tuple[bytes, bytes]]:
        with transaction(write=False) as c:
            return c.execute(
                "SELECT key, value FROM dict_items WHERE dict=? ORDER BY rowid", (self.name,)
            ).fetchall()


class QueueStore:
    """One named queue: FIFO per partition. A get takes items atomically, so two replicas never get
    the same one."""

    def __init__(self, name: str) -> None:
        self.name = name

    def put_many(self, values: list[bytes], partition: str = DEFAULT_PARTITION) -> None:
        with transaction() as c:
            c.executemany(
                "INSERT INTO queue_items (queue, partition, value) VALUES (?, ?, ?)",
                [(self.name, partition, v) for v in values],
            )

    def get_many(self, n: int, partition: str = DEFAULT_PARTITION) -> list[bytes]:
        with transaction() as c:
            rows = c.execute(
                "SELECT id, value FROM queue_items WHERE queue=? AND partition=? ORDER BY id LIMIT ?",
                (self.name, partition, n),
            ).fetchall()
            if rows:
                c.executemany("DELETE FROM queue_items WHERE id=?", [(r[0],) for r in rows])
        return [r[1] for r in rows]

    def after(self, last_id: int, partition: str = DEFAULT_PARTITION, n: int = 100) -> list[tuple[int, bytes]]:
        """Items after `last_id`, left in place (for `Queue.iterate`)."""
        with transaction(write=False) as c:
            return c.execute(
                "SELECT id, value FROM queue_items WHERE queue=? AND partition=? AND id>? ORDER BY id LIMIT ?",
                (self.name, partition, last_id, n),
            ).fetchall()

    def len(self, partition: str | None = DEFAULT_PARTITION) -> int:
        """Items in one partition, or in all of them with `partition=None`."""
        with transaction(write=False) as c:
            if partition is None:
                return c.execute("SELECT COUNT(*) FROM queue_items WHERE queue=?", (self.name,)).fetchone()[0]
            return c.execute(
                "SELECT COUNT(*) FROM queue_items WHERE queue=? AND partition=?", (self.name, partition)
            ).fetchone()[0]

    def clear(self, partition: str | None = DEFAULT_PARTITION) -> None:
        with transaction() as c:
            if partition is None:
                c.execute("DELETE FROM queue_items WHERE queue=?", (self.name,))
            else:
                c.execute("DELETE FROM queue_items WHERE queue=? AND partition=?", (self.name, partition))


def drop(kind: str, name: str) -> None:
    """Forget a whole Dict or Queue (an ephemeral one, when its block ends)."""
    table, column = ("dict_items", "dict") if kind == "dict" else ("queue_items", "queue")
    with transaction() as c:
        c.execute(f"DELETE FROM {table} WHERE {column}=?", (name,))  # noqa: S608 - fixed names
