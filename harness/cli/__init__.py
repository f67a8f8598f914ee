"""The ``harness`` command: plugins, run, show, compare, report (one module each), and the commands plugin
packages add."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback

from harness.api.errors import HarnessError, PluginCrash
from harness.api.registry import Registry
from harness.cli import compare, plugins, report, run, show

BUG_REPORT = "this is a bug in the harness or a plugin; please report it with the traceback above"


def parser(registry: Registry) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="harness", description="Evaluate classifiers and test-time defenses "
                                  "against adversarial attacks.")
    sub = top.add_subparsers(dest="command", required=True)
    for command in (plugins, run, show, compare, report):   # one module per built-in command
        command.add_parser(sub)
    for command in registry.commands():  # e.g. `harness train`, added by the built-in models package
        p = sub.add_parser(command.name, help=command.help)
        command.configure(p)
        p.set_defaults(func=command.run)
    return top


def _announce(argv: list[str]) -> None:
    """The first line of a run, before the plugins (and torch) are imported: something within a second."""
    if argv[:1] == ["run"] and "--quiet" not in argv and "--dry-run" not in argv:
        grid = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--grid"), "the grid")
        print(f"harness run: loading the plugins and {grid}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # Ctrl-C stops a run cleanly even where the parent left SIGINT ignored (a job started in the background of a
    # script, a test runner): the one-line message and exit status 130 below, never silence
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _announce(sys.argv[1:] if argv is None else argv)
        registry = Registry()
        for line in registry.skipped:   # a broken plugin package: one line; everything else works
            print(f"harness: {line}", file=sys.stderr)
        args = parser(registry).parse_args(argv)
        return args.func(args, registry)
    except PluginCrash as exc:  # a plugin's own failure: say which, then show where in its code
        print(f"harness: error: {exc}; its traceback follows", file=sys.stderr)
        traceback.print_exception(exc.cause, file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; every committed batch is kept, and the same command resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `harness run --dry-run | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # noqa: BLE001 - a real bug: show where, then say so
        traceback.print_exc()
        print(f"harness: internal error: {BUG_REPORT}", file=sys.stderr)
        return 1
