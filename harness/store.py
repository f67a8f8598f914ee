"""The SQLite results store (sqlite-utils): runs, units and one row per evaluated example.

A batch's rows and its unit's progress are written in one transaction, so a process killed at
any moment (SIGKILL included) loses no committed batch and never leaves half of one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import sqlite_utils

RESULT_KEY = ("run_id", "model", "attack", "defense", "repeat", "idx")


@dataclass(frozen=True)
class UnitState:
    done: int          # examples committed
    finished: bool


class Store:
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        if readonly:  # reports only read: never change a database someone handed us
            conn = sqlite3.connect(f"file:{Path(path).expanduser().resolve()}?mode=ro", uri=True)
            self.db = sqlite_utils.Database(conn)
            return
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(Path(path).expanduser())
        self.db.enable_wal()
        self._create()

    def _create(self) -> None:
        if "runs" not in self.db.table_names():
            self.db["runs"].create({
                "run_id": str, "config_path": str, "config_text": str, "config_hash": str, "identity": str,
                "attacks": str, "defenses": str, "models": str, "dataset": str, "n_examples": int,
                "norm": str, "eps": float, "repeats": int, "git_commit": str, "versions": str, "device": str,
                "started": float, "ended": float, "plugins": str, "classes": str, "dataset_display": str,
                "precision": str,
            }, pk="run_id")
        if "units" not in self.db.table_names():
            self.db["units"].create({
                "run_id": str, "unit_key": str, "model": str, "attack": str, "defenses": str, "repeat": int,
                "adaptive": int, "done": int, "total": int, "finished": int, "seconds": float, "updated": float,
            }, pk=("run_id", "unit_key"))
        if "results" not in self.db.table_names():
            self.db["results"].create({
                "run_id": str, "unit_key": str, "model": str, "attack": str, "defense": str, "repeat": int,
                "idx": int, "adaptive": int, "label": int, "pred": int, "correct": int, "vote_frac": float,
                "attack_s": float, "defense_s": float, "linf": float, "l2": float, "queries": int,
                "grad_norm": float,
            }, pk=RESULT_KEY)
            self.db["results"].create_index(["run_id", "model", "defense", "repeat"])
        if "examples" not in self.db.table_names():  # a few images per unit, for the reports' Figure 2c
            self.db["examples"].create({
                "run_id": str, "unit_key": str, "model": str, "attack": str, "defense": str, "repeat": int,
                "idx": int, "label": int, "pred_adv": int, "pred_defended": int, "ssim_adv": float,
                "ssim_defended": float, "clean_png": bytes, "adv_png": bytes, "defended_png": bytes,
            }, pk=RESULT_KEY)
        if "shards" not in self.db.table_names():  # example ranges finished by the Ray executor, in any order
            self.db["shards"].create({"run_id": str, "unit_key": str, "start": int, "stop": int},
                                     pk=("run_id", "unit_key", "start"))

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, run: dict[str, Any]) -> None:
        existing = self.db["runs"].rows_where("run_id = ?", [run["run_id"]])
        previous = next(iter(existing), None)
        if previous is not None:  # a resumed run keeps its first start time
            run = {**run, "started": previous["started"]}
        self.db["runs"].upsert(run, pk="run_id", alter=True)  # alter: databases written by older versions

    def end_run(self, run_id: str) -> None:
        self.db["runs"].update(run_id, {"ended": time.time()})

    def runs(self) -> list[dict[str, Any]]:
        if "runs" not in self.db.table_names():
            return []
        return list(self.db["runs"].rows_where(order_by="started"))

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        rows = self.runs()
        if not rows:
            raise LookupError(f"{self.path} holds no runs yet; run a grid with: harness run --grid FILE")
        if run_id is None:
            return rows[-1]
        matches = [r for r in rows if r["run_id"].startswith(run_id)]
        if len(matches) != 1:
            raise LookupError(f"run {run_id!r} matches {len(matches)} runs in {self.path}; "
                              f"known: {', '.join(r['run_id'] for r in rows)}")
        return matches[0]

    # --- units ------------------------------------------------------------------------------
    def unit_state(self, run_id: str, key: str) -> UnitState:
        row = next(iter(self.db["units"].rows_where("run_id = ? and unit_key = ?", [run_id, key])), None)
        return UnitState(0, False) if row is None else UnitState(row["done"], bool(row["finished"]))

    def register_unit(self, run_id: str, key: str, fields: dict[str, Any]) -> None:
        if self.db["units"].count_where("run_id = ? and unit_key = ?", [run_id, key]) == 0:
            self.db["units"].insert({"run_id": run_id, "unit_key": key, "done": 0, "finished": 0,
                                     "seconds": 0.0, "updated": time.time(), **fields})

    def commit_batch(self, run_id: str, key: str, rows: Iterable[dict[str, Any]], done: int, finished: bool,
                     seconds: float, examples: Iterable[dict[str, Any]] = ()) -> None:
        """The batch's rows (and saved example images) and the unit's progress, atomically."""
        with self.db.atomic():
            self.db["results"].insert_all(rows, pk=RESULT_KEY, replace=True, alter=True)
            self.db["examples"].insert_all(examples, pk=RESULT_KEY, replace=True)
            self.db.execute("UPDATE units SET done = ?, finished = ?, seconds = seconds + ?, updated = ? "
                            "WHERE run_id = ? AND unit_key = ?",
                            [done, int(finished), seconds, time.time(), run_id, key])

    def finished_shards(self, run_id: str, key: str) -> set[int]:
        if "shards" not in self.db.table_names():
            return set()
        return {r["start"] for r in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key])}

    def commit_shard(self, run_id: str, key: str, rows: list[dict[str, Any]], examples: list[dict[str, Any]],
                     start: int, stop: int, total: int, seconds: float) -> None:
        """A shard's rows and its record, atomically; ``units.done`` advances over the finished prefix only."""
        with self.db.atomic():
            self.db["results"].insert_all(rows, pk=RESULT_KEY, replace=True, alter=True)
            self.db["examples"].insert_all(examples, pk=RESULT_KEY, replace=True)
            self.db["shards"].insert({"run_id": run_id, "unit_key": key, "start": start, "stop": stop},
                                     pk=("run_id", "unit_key", "start"), replace=True)
            done = self.unit_state(run_id, key).done
            for row in self.db["shards"].rows_where("run_id = ? and unit_key = ?", [run_id, key], order_by="start"):
                if row["start"] <= done:
                    done = max(done, row["stop"])
            self.db.execute("UPDATE units SET done = ?, finished = ?, seconds = seconds + ?, updated = ? "
                            "WHERE run_id = ? AND unit_key = ?", [done, int(done >= total), seconds, time.time(),
                                                                   run_id, key])

    def units(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db["units"].rows_where("run_id = ?", [run_id], order_by="rowid")))

    def results(self, run_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db["results"].rows_where("run_id = ?", [run_id], order_by="rowid")))

    # --- aggregates (SQL) ---------------------------------------------------------------------
    def accuracy(self, run_id: str) -> pd.DataFrame:
        """Accuracy per (model, defense, attack, repeat)."""
        sql = ("SELECT model, defense, attack, repeat, AVG(correct) AS acc, COUNT(*) AS n FROM results "
               "WHERE run_id = ? GROUP BY model, defense, attack, repeat")
        return pd.read_sql_query(sql, self.db.conn, params=[run_id])

    def worst_case(self, run_id: str, attacks: list[str] | None = None) -> pd.DataFrame:
        """Per (model, defense, repeat): the share of examples correct under every attack, clean included.

        Only examples evaluated under all of the run's attacks count, so a partial run does not
        report an inflated worst case; ``n`` says how many examples that is.
        """
        attacks = attacks if attacks is not None else json.loads(self.run(run_id)["attacks"])
        marks = ", ".join("?" for _ in attacks)
        sql = f"""
            SELECT model, defense, repeat, AVG(all_correct) AS acc, COUNT(*) AS n FROM (
                SELECT model, defense, repeat, idx, MIN(correct) AS all_correct FROM results
                WHERE run_id = ? AND attack IN ({marks})
                GROUP BY model, defense, repeat, idx
                HAVING COUNT(DISTINCT attack) = ?
            ) GROUP BY model, defense, repeat"""
        return pd.read_sql_query(sql, self.db.conn, params=[run_id, *attacks, len(attacks)])
