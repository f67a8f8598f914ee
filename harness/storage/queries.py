"""Every read of the results a report or an analysis makes, as SQL in one place: callers get data frames and sets,
never the connection."""

from __future__ import annotations

import pandas as pd

from harness.storage.store import Store


def per_example(store: Store, run_id: str, attacks: list[str]) -> pd.DataFrame:
    """model, defense, repeat, idx, correct: right under every attack in ``attacks`` (one attack: its verdict),
    over the examples every one of them reached."""
    marks = ", ".join("?" for _ in attacks)
    sql = f"""SELECT model, defense, repeat, idx, MIN(correct) AS correct FROM results
              WHERE run_id = ? AND attack IN ({marks}) GROUP BY model, defense, repeat, idx
              HAVING COUNT(DISTINCT attack) = ?"""
    return pd.read_sql_query(sql, store.db.conn, params=[run_id, *attacks, len(attacks)])


def predictions(store: Store, run_id: str) -> pd.DataFrame:
    """Every row's cell, example, prediction and verdict (what comparing two runs pairs)."""
    sql = "SELECT model, attack, defense, repeat, idx, pred, correct FROM results WHERE run_id = ?"
    return pd.read_sql_query(sql, store.db.conn, params=[run_id])


def flip_counts(store: Store, run_id: str, reference: str) -> pd.DataFrame:
    """FtoT, TtoF, FtoF, FtoSame, TtoT and n per (model, attack, defense, repeat) of the transfer rows, each
    defense against ``reference`` on the same adversarial examples."""
    sql = """
        SELECT d.model, d.attack, d.defense, d.repeat,
               SUM(r.correct = 0 AND d.correct = 1) AS FtoT, SUM(r.correct = 1 AND d.correct = 0) AS TtoF,
               SUM(r.correct = 0 AND d.correct = 0 AND d.pred != r.pred) AS FtoF,
               SUM(r.correct = 0 AND d.correct = 0 AND d.pred = r.pred) AS FtoSame,
               SUM(r.correct = 1 AND d.correct = 1) AS TtoT, COUNT(*) AS n
        FROM results d JOIN results r
          ON r.run_id = d.run_id AND r.model = d.model AND r.attack = d.attack AND r.repeat = d.repeat
             AND r.idx = d.idx AND r.defense = ?
        WHERE d.run_id = ? AND d.defense != ? AND d.adaptive = 0
        GROUP BY d.model, d.attack, d.defense, d.repeat"""
    return pd.read_sql_query(sql, store.db.conn, params=[reference, run_id, reference])


def lipschitz_gaps(store: Store, run_id: str) -> pd.DataFrame:
    """model, flip (FtoT or TtoF), gap: the recorded local-Lipschitz gaps of flipped examples (the table's column
    is named ``kind``, as recorded databases hold it)."""
    return pd.read_sql_query("SELECT model, kind AS flip, gap FROM gaps WHERE run_id = ?", store.db.conn,
                             params=[run_id])


def adaptively_attacked_defenses(store: Store, run_id: str) -> set[str]:
    """Defenses that some attack through the defense has rows for."""
    rows = store.db.execute("SELECT DISTINCT defense FROM results WHERE run_id = ? AND adaptive = 1", [run_id])
    return {d for (d,) in rows.fetchall()}


def varying_defenses(store: Store, run_id: str, baselines: list[str]) -> set[str]:
    """Defenses whose predictions vary: a vote that was not unanimous, or a clean prediction that differs between
    repeats (clean inputs are the same in every repeat)."""
    varying = {d for (d,) in store.db.execute(
        "SELECT DISTINCT defense FROM results WHERE run_id = ? AND vote_frac < 1", [run_id]).fetchall()}
    marks = ", ".join("?" for _ in baselines)
    varying |= {d for (d,) in store.db.execute(
        f"SELECT DISTINCT defense FROM results WHERE run_id = ? AND attack IN ({marks}) GROUP BY model, defense, idx "
        "HAVING COUNT(DISTINCT pred) > 1", [run_id, *baselines]).fetchall()}
    return varying


def clean_gradient_norms(store: Store, run_id: str) -> pd.DataFrame:
    """model, repeat, idx, grad_norm: the input-gradient norm at each clean point."""
    return pd.read_sql_query(
        "SELECT model, repeat, idx, MIN(grad_norm) AS grad_norm FROM results WHERE run_id = ? "
        "AND grad_norm IS NOT NULL GROUP BY model, repeat, idx", store.db.conn, params=[run_id])


def broken_at_zero_gradient(store: Store, run_id: str, model: str) -> int:
    """Examples of ``model`` right when clean, with a zero gradient there, that an attack still got wrong."""
    return store.db.execute(
        "SELECT COUNT(DISTINCT r.repeat || ':' || r.idx) FROM results r JOIN results c ON c.run_id = r.run_id "
        "AND c.model = r.model AND c.repeat = r.repeat AND c.idx = r.idx AND c.defense = r.defense "
        "WHERE r.run_id = ? AND r.model = ? AND r.grad_norm IS NULL AND c.correct = 1 "
        "AND r.correct = 0 AND c.grad_norm = 0", [run_id, model]).fetchone()[0]
