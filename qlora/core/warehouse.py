"""The DuckDB warehouse: one file, many short connections, writes serialised by a file lock.

DuckDB allows one writing process per file. Domain partitions run in parallel
processes, so every access opens a connection under an inter-process lock and
closes it at once; partitions therefore never corrupt each other, they queue
for milliseconds. (The prod profile may point at Postgres instead; see docs/.)
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd
from filelock import FileLock


class Warehouse:
    def __init__(self, path: str | Path, lock_timeout_s: float = 600.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=self.lock_timeout_s):
            con = duckdb.connect(str(self.path))
            try:
                yield con
            finally:
                con.close()

    def table_exists(self, con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(
            con.execute(
                "select count(*) from information_schema.tables where table_name = ?", [table]
            ).fetchone()[0]
        )

    def replace_partition(self, table: str, key_column: str, key: str, frame: pd.DataFrame) -> int:
        """Atomically replace the rows of one partition (e.g. one domain) with ``frame``."""
        with self.connect() as con:
            con.register("incoming", frame)
            con.execute("begin transaction")
            try:
                if not self.table_exists(con, table):
                    con.execute(f'create table "{table}" as select * from incoming limit 0')
                con.execute(f'delete from "{table}" where "{key_column}" = ?', [key])
                con.execute(f'insert into "{table}" by name select * from incoming')
                con.execute("commit")
            except Exception:
                con.execute("rollback")
                raise
            finally:
                con.unregister("incoming")
        return len(frame)

    def append(self, table: str, frame: pd.DataFrame) -> None:
        with self.connect() as con:
            con.register("incoming", frame)
            if not self.table_exists(con, table):
                con.execute(f'create table "{table}" as select * from incoming')
            else:
                con.execute(f'insert into "{table}" by name select * from incoming')
            con.unregister("incoming")

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run a read query; a missing table yields an empty frame rather than an error."""
        with self.connect() as con:
            try:
                return con.execute(sql, params or []).df()
            except duckdb.CatalogException:
                return pd.DataFrame()
