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

    @contextmanager
    def _staged(self, table: str, frame: pd.DataFrame) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction with ``frame`` registered as ``incoming`` and ``table`` created like it if new."""
        with self.connect() as con:
            con.register("incoming", frame)
            con.execute("begin transaction")
            try:
                if not self.table_exists(con, table):
                    con.execute(f'create table "{table}" as select * from incoming limit 0')
                yield con
                con.execute("commit")
            except Exception:
                con.execute("rollback")
                raise
            finally:
                con.unregister("incoming")

    def replace_partition(self, table: str, key_column: str, key: str, frame: pd.DataFrame) -> int:
        """Atomically replace the rows of one partition (e.g. one domain) with ``frame``."""
        with self._staged(table, frame) as con:
            con.execute(f'delete from "{table}" where "{key_column}" = ?', [key])
            con.execute(f'insert into "{table}" by name select * from incoming')
        return len(frame)

    def insert_new(self, table: str, frame: pd.DataFrame, key: list[str]) -> int:
        """Atomically add the rows of ``frame`` whose ``key`` columns the table does not hold yet;
        returns how many were added (two writers at once never store a row twice)."""
        match = " and ".join(f't."{k}" = i."{k}"' for k in key)
        with self._staged(table, frame) as con:
            before = con.execute(f'select count(*) from "{table}"').fetchone()[0]
            con.execute(f'insert into "{table}" by name select * from incoming i '
                        f'where not exists (select 1 from "{table}" t where {match})')
            return con.execute(f'select count(*) from "{table}"').fetchone()[0] - before

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
