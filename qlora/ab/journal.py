"""The router's durable record of what it answered and what users said about it (SQLite).

Every completion's id is bound to its alias, versioned name, arm and experiment; feedback
is accepted only for ids found here. Each write is one transaction in WAL mode with
``synchronous=FULL`` (fsync'd before the router answers), so a router restart loses
nothing it acknowledged. ``seq`` columns let the warehouse ingest incrementally.
The user key is stored as a hash only; prompts and answers are kept (0600 file) because
"adjust and repeat" exports them, through PII masking, as next week's data candidates.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = """
create table if not exists responses (
  seq integer primary key autoincrement,
  response_id text unique not null,
  alias text not null, served text not null, arm text not null, experiment_id text not null,
  user_hash text not null, created_at real not null, latency_ms real not null, status integer not null,
  completion_tokens integer not null, prompt_json text not null, answer text not null);
create table if not exists feedback (
  seq integer primary key autoincrement,
  response_id text not null, other_response_id text not null, kind text not null,
  rating text not null, score integer, preferred_response_id text not null, created_at real not null);
create index if not exists feedback_response on feedback(response_id);
create table if not exists meta (key text primary key, value text not null);
"""
RESPONSE_COLUMNS = ("seq", "response_id", "alias", "served", "arm", "experiment_id", "user_hash", "created_at",
                    "latency_ms", "status", "completion_tokens", "prompt_json", "answer")
FEEDBACK_COLUMNS = ("seq", "response_id", "other_response_id", "kind", "rating", "score",
                    "preferred_response_id", "created_at")


@dataclass
class ResponseRecord:
    response_id: str
    alias: str            # the name the client asked for
    served: str           # the versioned name that answered
    arm: str              # "control" | "candidate" | "" (no experiment)
    experiment_id: str
    user_hash: str
    latency_ms: float
    status: int
    completion_tokens: int
    prompt_json: str
    answer: str
    created_at: float = field(default_factory=time.time)


@dataclass
class FeedbackRecord:
    response_id: str
    kind: str                     # "rating" | "score" | "pair"
    rating: str = ""              # "up" | "down" (a score maps to up/down for the thumbs-up rate later)
    score: int | None = None
    other_response_id: str = ""   # pair only
    preferred_response_id: str = ""  # pair only; "" = tie
    created_at: float = field(default_factory=time.time)


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # it holds prompts and answers
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.executescript(SCHEMA)
        self._db.execute("insert or ignore into meta values ('journal_id', ?)", (uuid.uuid4().hex,))
        # Names this file: a journal created anew (state dir wiped) restarts its seq, and the
        # warehouse must not take its rows for ones it already holds.
        self.journal_id = self._db.execute("select value from meta where key = 'journal_id'").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, values: tuple) -> None:
        with self._lock:
            self._db.execute("begin immediate")
            try:
                self._db.execute(sql, values)
                self._db.execute("commit")
            except BaseException:
                self._db.execute("rollback")
                raise

    def record_response(self, record: ResponseRecord) -> None:
        row = asdict(record)
        names = ", ".join(row)
        self._write(f"insert or ignore into responses ({names}) values ({', '.join('?' * len(row))})",
                    tuple(row.values()))

    def record_feedback(self, record: FeedbackRecord) -> None:
        row = asdict(record)
        self._write(f"insert into feedback ({', '.join(row)}) values ({', '.join('?' * len(row))})",
                    tuple(row.values()))

    def response(self, response_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"select {', '.join(RESPONSE_COLUMNS)} from responses where response_id = ?",
                                   (response_id,)).fetchone()
        return dict(zip(RESPONSE_COLUMNS, row)) if row else None

    def responses_after(self, seq: int, limit: int = 5000) -> list[dict]:
        return self._page("responses", RESPONSE_COLUMNS, seq, limit)

    def feedback_after(self, seq: int, limit: int = 5000) -> list[dict]:
        return self._page("feedback", FEEDBACK_COLUMNS, seq, limit)

    def _page(self, table: str, columns: tuple, seq: int, limit: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute(f"select {', '.join(columns)} from {table} where seq > ? order by seq limit ?",
                                    (seq, limit)).fetchall()
        return [dict(zip(columns, row)) for row in rows]
