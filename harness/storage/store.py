"""The SQLite results store (sqlite-utils): runs, units and one row per evaluated example.

Tables are derived from the record types in ``harness.storage.records``. A batch's rows, its shard record
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

from harness.api.cost import Passes
from harness.api.errors import StoreError
from harness.run.chatter import MAX_KEPT
from harness.storage.records import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    TABLES,
    UPGRADES_FROM,
    ClaimRecord,
    RunRecord,
    ShardRecord,
    UnitRecord,
    as_row,
    columns,
    from_row,
    required_columns,
)

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


def _connect(uri: str, **kwargs: Any) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, **kwargs)


def _refuse_non_files(file: Path, shown: str) -> None:
    """A results database is a regular file: a folder is a common slip, and a FIFO would block every read."""
    if file.is_dir():
        raise StoreError(f"{shown} is a directory, not a results database. Fix: pass a file path, "
                         "e.g. --db results/run.sqlite")
    if file.exists() and not file.is_file():
        raise StoreError(f"{shown} is not a regular file (a pipe, socket or device); pass a results database file")


def _not_a_database(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's own verdict on a file without its header.

    The header is never read with ``open()``: closing any descriptor of the file drops every POSIX lock
    this process holds on it, so a second process would take its live connections for gone, fold the
    write-ahead log and delete it under them, which corrupts the database."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB


class Store:
    """A results database. ``readonly=True`` never writes (reports, show, compare, estimate)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path, self.readonly = str(path), readonly
        file = Path(path).expanduser()
        _refuse_non_files(file, self.path)
        self.db = self._open_readonly(file) if readonly else self._open_writable(file)
        try:
            self._check_ours()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection; the last one to close a database folds and removes its -wal and -shm files."""
        self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def check_path(cls, path: str | Path) -> None:
        """Refuse a database that cannot be ours before any work starts; creates nothing."""
        file = Path(path).expanduser()
        _refuse_non_files(file, str(path))
        if file.exists() and file.stat().st_size:
            cls(path, readonly=True).close()
            return
        folder = next((p for p in (file.parent, *file.parent.parents) if p.exists()), Path("/"))
        try:  # a probe, not os.access: it says "writable" for root on read-only file systems
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise StoreError(f"cannot write the results database {path}: nothing can be created in {folder} "
                             f"({exc.strerror}). Fix: pass a writable location with --db") from None

    # --- opening ----------------------------------------------------------------------------
    def _open_readonly(self, file: Path) -> sqlite_utils.Database:
        """Read the database as it is now, write-ahead log included, and leave its folder as it was found.

        Where the folder is writable, a read-write connection that refuses every write (``query_only``)
        reads the WAL and, as the last connection to close, folds it in and removes the -wal and -shm files
        SQLite needs while reading; a ``mode=ro`` connection would leave them behind. Where nothing can be
        written (a read-only mount), SQLite can read a WAL only through a -shm file it cannot create: the
        database is then read as immutable if it has no pending WAL, and refused otherwise, never stale.
        The path goes into an URI percent-quoted, so '#', '%', '?' and spaces name this file and no other."""
        if not file.exists():
            raise StoreError(f"{self.path} does not exist; run a grid first: harness run --grid FILE")
        uri = file.resolve().as_uri()
        wal = file.with_name(file.name + "-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        for mode in ("mode=rw", "mode=ro") + (() if pending else ("immutable=1",)):
            try:
                conn = _connect(f"{uri}?{mode}")
            except sqlite3.OperationalError:
                continue
            try:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return sqlite_utils.Database(conn)
            except sqlite3.OperationalError:
                conn.close()
            except sqlite3.DatabaseError as exc:
                conn.close()
                if _not_a_database(exc):
                    raise StoreError(f"{self.path} is not an SQLite database (no SQLite header); pass the file "
                                     "that harness run wrote") from None
                raise StoreError(f"{self.path} cannot be read as an SQLite database: {exc}") from None
        if pending:
            raise StoreError(f"{self.path} cannot be read here: its latest writes are in {wal.name}, which SQLite can "
                             f"only read by creating {file.name}-shm beside it, and this folder is read-only. Fix: copy "
                             f"{file.name} together with {wal.name} to a writable folder and read the copy")
        raise StoreError(f"{self.path} cannot be opened, even read-only; check its permissions")

    def _open_writable(self, file: Path) -> sqlite_utils.Database:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(f"{file.resolve().as_uri()}?mode=rwc", isolation_level=None)
            try:  # reads the header before anything is written
                conn.execute("PRAGMA schema_version").fetchone()
            except sqlite3.DatabaseError as exc:
                conn.close()
                if isinstance(exc, sqlite3.OperationalError):
                    raise
                if _not_a_database(exc):
                    raise StoreError(f"{self.path} is not an SQLite database; it would be overwritten. Fix: pass a "
                                     "new file with --db, or move that file away") from None
                raise StoreError(f"{self.path} cannot be read as an SQLite database: {exc}") from None
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
        if version not in UPGRADES_FROM and version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written with results schema version {version}; this harness reads "
                             f"version {SCHEMA_VERSION}. Fix: re-run the grid into a new file (--db NEW.sqlite), or "
                             "read this one with the harness version that wrote it")
        self._check_intact(tables)
        if version in UPGRADES_FROM and not self.readonly:
            self._upgrade()

    def _check_intact(self, tables: list[str]) -> None:
        """Refuse a damaged database of ours (a table or column gone, a corrupt page, an unreadable run record)
        before anything reads or writes it; nothing is repaired or overwritten."""
        def damaged(what: str) -> StoreError:
            return StoreError(f"{self.path} is a damaged results database ({what}); it is left untouched. Fix: "
                              "restore it from a copy, or run the grid into a new file with --db NEW.sqlite")

        try:
            for name, (record, _) in TABLES.items():
                if name not in tables:
                    raise damaged(f"table {name!r} is missing")
                have = set(self.db[name].columns_dict)
                lost = [c for c in required_columns(record) if c not in have]
                if lost:
                    raise damaged(f"table {name!r} lacks the column(s) {', '.join(lost)}")
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                problem = " ".join(line for line in check.splitlines() if not line.startswith("***"))
                raise damaged(f"SQLite's integrity check says: {problem.strip()}")
            for run_id, identity, plugins in self.db.execute("SELECT run_id, identity, plugins FROM runs").fetchall():
                for field, text in (("identity", identity), ("plugins", plugins)):
                    try:
                        json.loads(text)
                    except (TypeError, ValueError):
                        raise damaged(f"the {field} of run {run_id} is not JSON") from None
        except sqlite3.DatabaseError as exc:
            raise damaged(str(exc)) from None

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
        """Record a run; a resumed run keeps its first start time and is marked unfinished again, and keeps every
        device that computed part of it."""
        row = as_row(run)
        with self._write():
            before = next(iter(self.db["runs"].rows_where("run_id = ?", [run.run_id])), None)
            if before is not None and run.device not in before["device"].split("; then "):
                row["device"] = f"{before['device']}; then {run.device}"
            self.db["runs"].insert(row, ignore=True)
            self.db["runs"].update(run.run_id, {k: v for k, v in row.items() if k not in ("run_id", "started")}
                                   | {"ended": None})

    def record_device(self, run_id: str, device: str, *, instead_of: str = "") -> None:
        """Add a device that computed part of the run (a Ray worker's) to the run's record, once; it replaces
        ``instead_of`` (the driver's, which only checked the models)."""
        with self._write():
            before = self.db.execute("SELECT device FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
            if before == instead_of:
                after = device
            elif device in before.split("; then "):
                return
            else:
                after = f"{before}; then {device}"
            self.db.execute("UPDATE runs SET device = ? WHERE run_id = ?", [after, run_id])

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

    def _add_messages(self, run_id: str, key: str, messages: Iterable[str]) -> None:
        """Merge what a batch's plugins printed into its unit's messages (distinct, in order, at most MAX_KEPT)."""
        new = list(messages)
        if not new:
            return
        row = self.db.execute("SELECT messages FROM units WHERE run_id = ? AND unit_key = ?", [run_id, key]).fetchone()
        kept = json.loads(row[0]) if row and row[0] else []
        kept += [m for m in dict.fromkeys(new) if m not in kept][:max(MAX_KEPT - len(kept), 0)]
        self.db.execute("UPDATE units SET messages = ? WHERE run_id = ? AND unit_key = ?", [json.dumps(kept), run_id, key])

    def reuse_finished(self, run_id: str, keys: Iterable[str]) -> dict[str, str]:
        """Copy into ``run_id`` every unit of ``keys`` that another run of this database finished: a unit's key
        hashes everything that determines its rows (code, data, parameters, seeds, device), so the same key means
        the same rows. Returns unit key → the run its rows came from; each copy is one transaction, like a batch."""
        reused: dict[str, str] = {}
        for key in keys:
            if self.unit_state(run_id, key).finished:
                continue
            source = self.db.execute("SELECT run_id FROM units WHERE unit_key = ? AND finished = 1 AND run_id != ? "
                                     "ORDER BY updated LIMIT 1", [key, run_id]).fetchone()
            if source is None:
                continue
            with self._write():
                for table in ("results", "examples", "gaps", "shards"):
                    names = [c for c in columns(TABLES[table][0]) if c != "run_id"]
                    listed = ", ".join(names)
                    self.db.execute(f"INSERT OR REPLACE INTO {table} (run_id, {listed}) SELECT ?, {listed} FROM {table} "
                                    "WHERE run_id = ? AND unit_key = ?", [run_id, source[0], key])
                self.db.execute(
                    "UPDATE units SET (done, finished, seconds, counted_forward, counted_backward, floor_forward, "
                    "floor_backward, smallest_chunk, messages, reused_from, updated) = (SELECT done, finished, seconds, "
                    "counted_forward, counted_backward, floor_forward, floor_backward, smallest_chunk, messages, ?, ? "
                    "FROM units "
                    "WHERE run_id = ? AND unit_key = ?) WHERE run_id = ? AND unit_key = ?",
                    [source[0], time.time(), source[0], key, run_id, key])
            reused[key] = source[0]
        return reused

    def unit_state(self, run_id: str, key: str) -> UnitState:
        row = next(iter(self.db["units"].rows_where("run_id = ? and unit_key = ?", [run_id, key])), None)
        return UnitState(0, False) if row is None else UnitState(row["done"], bool(row["finished"]))

    def finished_shards(self, run_id: str, key: str) -> set[int]:
        return {r["start"] for r in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key])}

    def commit(self, run_id: str, key: str, records: Mapping[str, Iterable[Any]], *,
               start: int, stop: int, total: int, seconds: float, owner: str = "", counted: Passes = Passes(0, 0),
               floor: Passes = Passes(0, 0), smallest_chunk: int | None = None, messages: Iterable[str] = ()) -> None:
        """Records of the example range [start, stop) of a unit (by table: results, examples, gaps), its shard
        record and the unit's progress, atomically; the passes it made (``counted``) and its ``floor`` add to
        the unit's.

        ``units.done`` advances over the finished prefix only, so ranges may be committed in any order.
        """
        with self._write():
            for table, rows in records.items():
                self.db[table].insert_all((as_row(r) for r in rows), pk=TABLES[table][1], replace=True)
            self.db["shards"].insert(as_row(ShardRecord(run_id, key, start, stop, owner)), replace=True)
            self._add_messages(run_id, key, messages)
            done = self.unit_state(run_id, key).done
            for shard in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key], order_by="start"):
                if shard["start"] <= done:
                    done = max(done, shard["stop"])
            self.db.execute(
                "UPDATE units SET done = ?, finished = ?, seconds = seconds + ?, updated = ?, "
                "counted_forward = COALESCE(counted_forward, 0) + ?, counted_backward = COALESCE(counted_backward, 0) + ?, "
                "floor_forward = COALESCE(floor_forward, 0) + ?, floor_backward = COALESCE(floor_backward, 0) + ?, "
                "smallest_chunk = MIN(COALESCE(smallest_chunk, ?), COALESCE(?, smallest_chunk)) "
                "WHERE run_id = ? AND unit_key = ?",
                [done, int(done >= total), seconds, time.time(), counted.forward, counted.backward, floor.forward,
                 floor.backward, smallest_chunk, smallest_chunk, run_id, key])

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

    def mean_draws(self, run_id: str, defenses: list[str]) -> float | None:
        """The draws the defenses' votes took on average (None where the rows predate their recording)."""
        if "draws" not in self.db["results"].columns_dict:
            return None
        marks = ", ".join("?" for _ in defenses)
        row = self.db.execute(f"SELECT AVG(draws) FROM results WHERE run_id = ? AND defense IN ({marks})",
                              [run_id, *defenses]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

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
