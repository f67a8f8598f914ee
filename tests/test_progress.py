"""The grid-level progress: weighed by the cost model, resumed from the database, plain lines off a terminal."""

from __future__ import annotations

import io
import re

from conftest import digits_grid, harness_cli
from harness.api.interfaces import Passes
from harness.run.progress import GridProgress, UnitWork


def _plain(units: list[UnitWork]) -> tuple[GridProgress, io.StringIO]:
    stream = io.StringIO()   # not a terminal
    return GridProgress(units, stream=stream, every_s=0.0), stream


def _shares(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"grid: (\d+)% of the work done", text)]


def test_the_grid_is_weighed_by_each_units_passes_not_by_unit_count():
    clean = UnitWork("clean", Passes(forward=100, backward=0), examples=100, done=0)
    pgd = UnitWork("pgd", Passes(forward=1000, backward=1000), examples=100, done=0)   # 30x the clean unit's work
    progress, stream = _plain([clean, pgd])
    progress.advance("clean", 100)
    assert _shares(stream.getvalue()) == [0, 3]        # one of two units, but 100 of 3,100 weighed passes
    assert "1/2 units" in stream.getvalue().splitlines()[-1]
    progress.advance("pgd", 50)
    progress.close()
    assert _shares(stream.getvalue())[-1] == 52 and "1/2 units" in stream.getvalue().splitlines()[-1]


def test_a_resumed_grid_starts_from_what_is_done_and_its_eta_counts_only_this_processs_rate():
    units = [UnitWork("a", Passes(100, 100), 100, done=100), UnitWork("b", Passes(100, 100), 100, done=50)]
    progress, stream = _plain(units)
    assert _shares(stream.getvalue()) == [75] and "1/2 units" in stream.getvalue()
    assert progress.eta_s() is None and "ETA unknown" in stream.getvalue()   # nothing measured yet here
    progress.advance("b", 25)
    eta = progress.eta_s()
    assert eta is not None and eta > 0
    elapsed = progress.last_line - progress.started
    # 25 of the remaining 50 examples took `elapsed`: the other 25 take about as long again
    assert abs(eta - elapsed) <= max(elapsed, 1e-3)


def test_a_run_off_a_terminal_prints_plain_progress_lines_and_a_rerun_starts_done(tmp_path):
    attacks = '[[attacks]]\nplugin = "pgd"\nsteps = 3\nstep_size = 0.05\n'
    grid = digits_grid(tmp_path, n=40, attacks=attacks)
    first = harness_cli("run", "--grid", str(grid))          # captured: stderr is not a terminal
    lines = [line for line in first.stderr.splitlines() if line.startswith("grid:")]
    assert _shares("\n".join(lines))[0] == 0 and _shares(lines[-1]) == [100]
    assert "\r" not in first.stderr                            # no bar redrawn into a log
    again = harness_cli("run", "--grid", str(grid))
    resumed = [line for line in again.stderr.splitlines() if line.startswith("grid:")]
    assert _shares(resumed[0]) == [100] and "2/2 units" in resumed[0]
    assert harness_cli("run", "--grid", str(grid), "--quiet").stderr.count("grid:") == 0


def test_the_bar_on_a_terminal_reads_cleanly():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = GridProgress([UnitWork("a", Passes(10, 0), 10, 0), UnitWork("b", Passes(10, 0), 10, 0),
                             UnitWork("c", Passes(10, 0), 10, 0)], stream=stream)
    progress.advance("a", 10)
    progress.close()
    drawn = stream.getvalue()
    assert "grid, 1/3 units: " in drawn and "| ," not in drawn and ", ," not in drawn


def test_passes_inside_a_batch_move_the_grid_before_the_batch_is_committed_and_are_not_counted_twice():
    progress, stream = _plain([UnitWork("a", Passes(100, 50), 10, 0), UnitWork("b", Passes(100, 50), 10, 0)])
    progress.passing("a", Passes(40, 20), examples=10)           # 80 of unit a's 200 weighed passes: 20 % of 400
    assert _shares(stream.getvalue())[-1] == 20 and "0/2 units" in stream.getvalue().splitlines()[-1]
    assert progress.eta_s() is not None                          # a rate before any batch has finished
    progress.passing("a", Passes(1000, 1000), examples=10)       # more than planned: held below the whole unit
    assert _shares(stream.getvalue())[-1] == 48                  # 95 % of unit a
    progress.advance("a", 10)                                    # the commit settles unit a at exactly its share
    assert _shares(stream.getvalue())[-1] == 50 and progress.done == 200


def test_a_unit_of_one_batch_shows_progress_while_it_runs(tmp_path, registry):
    """20 examples in batches of 50: every unit is one batch, and the grid's line moves inside it."""
    from harness.grid.reader import load_grid
    from harness.run.runner import Runner
    from harness.storage.store import Store

    grid = load_grid(digits_grid(tmp_path, n=20, batch_size=50,
                                 attacks='[[attacks]]\nplugin = "pgd"\nsteps = 40\nstep_size = 0.01\n'), registry)
    stream = io.StringIO()
    with Store(grid.db) as store:
        runner = Runner(grid, store, progress=True)
        runner.report_every_s = 0.0
        import contextlib
        with contextlib.redirect_stderr(stream):
            runner.run()
    inside = [share for line in stream.getvalue().splitlines() if line.startswith("grid:") and "0/2 units" in line
              for share in _shares(line)]
    assert max(inside) > 0              # moved before the first unit (one batch) was committed
    between = [share for line in stream.getvalue().splitlines() if "1/2 units" in line for share in _shares(line)]
    assert len(set(between)) > 2        # and inside the second (PGD-40's passes), not only at its end
