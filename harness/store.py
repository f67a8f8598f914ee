"""The SQLite results store (sqlite-utils): runs, units and one row per evaluated example.

Tables are derived from the record types in ``harness.records``. A batch's rows, its shard record
and its unit's progress are written in one transaction, so a process killed at any moment
(SIGKILL included) loses no committed batch and never leaves half of one. Several processes may
share one database: writes queue behind SQLite's lock, and a process computes a unit only while it
holds the unit's claim (see :meth:`Store.claim`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd
import sqlite_utils

from harness.errors import StoreError
from harness.records import (APPLICATION_ID, SCHEMA_VERSION, TABLES, UPGRADES_FROM, ClaimRecord, RunRecord,
                             ShardRecord, UnitRecord, as_row, columns, from_row)

BUSY_TIMEOUT_S = 120   # how long a writer waits for another process's transaction before giving up
STALE_CLAIM_S = 120    # a claim whose heartbeat is older than this is taken over (its process is gone)


@dataclass(frozen=True)
class UnitState:
    done: int          # examples committed (a prefix of the unit)
    finished: bool


@dataclass(frozen=True)
class Owner:
    """This process, as it signs the units it claims."""

    id: str
    host: str
    pid: int

    @staticmethod
    def here() -> Owner:
        host, pid = socket.gethostname(), os.getpid()
        return Owner(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sqlite_header(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


class Store:
    """A results database. ``readonly=True`` never writes (reports, show, compare, estimate)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path, self.readonly = str(path), readonly
        file = Path(path).expanduser()
        if file.is_dir():
            raise StoreError(f"{path} is a directory, not a results database. Fix: pass a file path, "
                             "e.g. --db results/run.sqlite")
        self.db = self._open_readonly(file) if readonly else self._open_writable(file)
        self._check_ours()

    @classmethod
    def check_path(cls, path: str | Path) -> None:
        """Refuse a database that cannot be ours before any work starts; creates nothing."""
        file = Path(path).expanduser()
        if file.exists() and not file.is_dir() and file.stat().st_size:
            cls(path, readonly=True).db.conn.close()
            return
        if file.is_dir():
            raise StoreError(f"{path} is a directory, not a results database. Fix: pass a file path, "
                             "e.g. --db results/run.sqlite")
        folder = next((p for p in (file.parent, *file.parent.parents) if p.exists()), Path("/"))
        try:  # a probe, not os.access: it says "writable" for root on read-only file systems
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise StoreError(f"cannot write the results database {path}: nothing can be created in {folder} "
                             f"({exc.strerror}). Fix: pass a writable location with --db") from None

    # --- opening ----------------------------------------------------------------------------
    def _open_readonly(self, file: Path) -> sqlite_utils.Database:
        if not file.exists():
            raise StoreError(f"{self.path} does not exist; run a grid first: harness run --grid FILE")
        if file.stat().st_size and not _sqlite_header(file):
            raise StoreError(f"{self.path} is not an SQLite database (no SQLite header); pass the file that "
                             "harness run wrote")
        # Read-only; where nothing can be written beside the file (an archive, a read-only mount) a WAL
        # database cannot even be read that way (its -shm file cannot be made), so it is opened immutable.
        for mode in ("mode=ro", "immutable=1"):
            conn = sqlite3.connect(f"file:{file.resolve()}?{mode}", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return sqlite_utils.Database(conn)
            except sqlite3.OperationalError:
                conn.close()
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise StoreError(f"{self.path} cannot be read as an SQLite database: {exc}") from None
        raise StoreError(f"{self.path} cannot be opened, even read-only; check its permissions")

    def _open_writable(self, file: Path) -> sqlite_utils.Database:
        if file.exists() and file.stat().st_size and not _sqlite_header(file):
            raise StoreError(f"{self.path} is not an SQLite database; it would be overwritten. Fix: pass a new "
                             "file with --db, or move that file away")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(file, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db = sqlite_utils.Database(conn)
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.OperationalError) as exc:
            raise StoreError(f"cannot write the results database {self.path}: {exc}. Fix: pass a writable "
                             "location with --db") from None
        return db

    def _check_ours(self) -> None:
        try:
            app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.table_names()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be read as an SQLite database: {exc}") from None
        if app_id == 0 and not tables:
            if not self.readonly:
                self._create()
            return
        if app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is not a robustness-harness database (it holds tables "
                             f"{', '.join(tables[:5]) or '(none)'}); it is left untouched. Fix: pass another file with --db")
        if version in UPGRADES_FROM:
            if not self.readonly:
                self._upgrade()
            return
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written with results schema version {version}; this harness reads "
                             f"version {SCHEMA_VERSION}. Fix: re-run the grid into a new file (--db NEW.sqlite), or "
                             "read this one with the harness version that wrote it")

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction. IMMEDIATE takes the write lock up front, so two processes queue (up to
        BUSY_TIMEOUT_S) instead of failing when a read would have to be upgraded to a write."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc) from None
        try:
            yield
            self.db.conn.commit()
        except BaseException as exc:
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
            if isinstance(exc, sqlite3.OperationalError):
                raise self._write_error(exc) from None
            raise

    def _write_error(self, exc: sqlite3.OperationalError) -> StoreError:
        stored = self.db.execute("SELECT COUNT(*) FROM shards").fetchone()[0] if "shards" in self.db.table_names() else 0
        if "full" in str(exc):
            return StoreError(f"the disk holding {self.path} is full; {stored} batches are safely stored and nothing "
                              "half-written was kept. Fix: free space, then run the same command: it resumes")
        return StoreError(f"cannot write {self.path}: {exc}; {stored} batches are safely stored. The same command "
                          "resumes once the database is writable")

    def _create(self) -> None:
        with self._write():
            for name, (record, pk) in TABLES.items():
                self.db[name].create(columns(record), pk=pk if len(pk) > 1 else pk[0], if_not_exists=True)
            self.db["results"].create_index(["run_id", "model", "defense", "repeat"], if_not_exists=True)
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _upgrade(self) -> None:
        """Add the columns the current records have and an older file lacks (every upgrade only adds)."""
        with self._write():
            for name, (record, _) in TABLES.items():
                if name not in self.db.table_names():
                    continue
                have = set(self.db[name].columns_dict)
                for column, kind in columns(record).items():
                    if column not in have:
                        self.db[name].add_column(column, kind)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, run: RunRecord) -> None:
        """Record a run; a resumed run keeps its first start time and is marked unfinished again."""
        row = as_row(run)
        with self._write():
            self.db["runs"].insert(row, ignore=True)
            self.db["runs"].update(run.run_id, {k: v for k, v in row.items() if k not in ("run_id", "started")}
                                   | {"ended": None})

    def end_run(self, run_id: str) -> None:
        with self._write():
            self.db["runs"].update(run_id, {"ended": time.time()})

    def runs(self) -> list[RunRecord]:
        if "runs" not in self.db.table_names():
            return []
        return [from_row(RunRecord, r) for r in self.db["runs"].rows_where(order_by="started")]

    def run(self, run_id: str | None = None) -> RunRecord:
        rows = self.runs()
        if not rows:
            raise StoreError(f"{self.path} holds no runs yet; run a grid with: harness run --grid FILE")
        if run_id is None:
            return rows[-1]
        matches = [r for r in rows if r.run_id.startswith(run_id)]
        if len(matches) != 1:
            raise StoreError(f"run {run_id!r} matches {len(matches)} runs in {self.path}; "
                             f"known: {', '.join(r.run_id for r in rows)}")
        return matches[0]

    # --- units ------------------------------------------------------------------------------
    def register_units(self, units: Iterable[UnitRecord]) -> None:
        """Record units not yet known (a resumed run keeps its progress)."""
        with self._write():
            self.db["units"].insert_all((as_row(u) for u in units), ignore=True)

    def unit_state(self, run_id: str, key: str) -> UnitState:
        row = next(iter(self.db["units"].rows_where("run_id = ? and unit_key = ?", [run_id, key])), None)
        return UnitState(0, False) if row is None else UnitState(row["done"], bool(row["finished"]))

    def finished_shards(self, run_id: str, key: str) -> set[int]:
        return {r["start"] for r in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key])}

    def commit(self, run_id: str, key: str, records: Mapping[str, Iterable[Any]], *,
               start: int, stop: int, total: int, seconds: float, owner: str = "") -> None:
        """Records of the example range [start, stop) of a unit (by table: results, examples, gaps), its shard
        record and the unit's progress, atomically.

        ``units.done`` advances over the finished prefix only, so ranges may be committed in any order.
        """
        with self._write():
            for table, rows in records.items():
                self.db[table].insert_all((as_row(r) for r in rows), pk=TABLES[table][1], replace=True)
            self.db["shards"].insert(as_row(ShardRecord(run_id, key, start, stop, owner)), replace=True)
            done = self.unit_state(run_id, key).done
            for shard in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key], order_by="start"):
                if shard["start"] <= done:
                    done = max(done, shard["stop"])
            self.db.execute("UPDATE units SET done = ?, finished = ?, seconds = seconds + ?, updated = ? "
                            "WHERE run_id = ? AND unit_key = ?",
                            [done, int(done >= total), seconds, time.time(), run_id, key])

    # --- claims: several processes on one grid --------------------------------------------------
    def claim(self, run_id: str, key: str, owner: Owner, stale_after: float = STALE_CLAIM_S) -> bool:
        """Take the unit for ``owner`` unless another live process holds it; atomic across processes.

        A claim is stale, and taken over, when its process is gone (same host: its pid no longer
        exists) or its heartbeat is older than ``stale_after`` seconds (another host)."""
        now = time.time()
        with self._write():
            row = next(iter(self.db["claims"].rows_where("run_id = ? and unit_key = ?", [run_id, key])), None)
            if row is not None and row["owner"] != owner.id:
                gone = row["host"] == owner.host and not _alive(row["pid"])
                if not gone and now - row["heartbeat"] < stale_after:
                    return False
            self.db["claims"].insert(as_row(ClaimRecord(run_id, key, owner.id, owner.host, owner.pid, now)),
                                     replace=True)
        return True

    def release(self, run_id: str, key: str, owner: Owner) -> None:
        with self._write():
            self.db.execute("DELETE FROM claims WHERE run_id = ? AND unit_key = ? AND owner = ?",
                            [run_id, key, owner.id])

    def heartbeat(self, owner: Owner) -> None:
        with self._write():
            self.db.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", [time.time(), owner.id])

    # --- reading ------------------------------------------------------------------------------
    def units(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db["units"].rows_where("run_id = ?", [run_id], order_by="rowid")))

    def results(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db["results"].rows_where("run_id = ?", [run_id], order_by="rowid")))

    def accuracy(self, run_id: str) -> pd.DataFrame:
        """Accuracy per (model, defense, attack, repeat)."""
        sql = ("SELECT model, defense, attack, repeat, AVG(correct) AS acc, COUNT(*) AS n FROM results "
               "WHERE run_id = ? GROUP BY model, defense, attack, repeat")
        return pd.read_sql_query(sql, self.db.conn, params=[run_id])

    def worst_case(self, run_id: str, attacks: list[str]) -> pd.DataFrame:
        """Per (model, defense, repeat): the share of examples correct under every attack in ``attacks``.

        Only examples evaluated under all of them count, so a partial run does not report an
        inflated worst case; ``n`` says how many examples that is.
        """
        marks = ", ".join("?" for _ in attacks)
        sql = f"""
            SELECT model, defense, repeat, AVG(all_correct) AS acc, COUNT(*) AS n FROM (
                SELECT model, defense, repeat, idx, MIN(correct) AS all_correct FROM results
                WHERE run_id = ? AND attack IN ({marks})
                GROUP BY model, defense, repeat, idx
                HAVING COUNT(DISTINCT attack) = ?
            ) GROUP BY model, defense, repeat"""
        return pd.read_sql_query(sql, self.db.conn, params=[run_id, *attacks, len(attacks)])


class Heartbeat:
    """Keeps this process's claims fresh from a background thread with its own connection."""

    def __init__(self, path: str, owner: Owner, every: float = STALE_CLAIM_S / 6):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(path, owner, every), daemon=True)

    def _beat(self, path: str, owner: Owner, every: float) -> None:
        store = None
        while not self._stop.wait(every):
            try:
                store = store or Store(path)
                store.heartbeat(owner)
            except Exception:  # noqa: BLE001 - a missed beat only risks an early takeover, never wrong rows
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
