"""What a plugin prints while it runs: kept with its unit for the report, instead of interleaved with progress.

Libraries print notes of their own (pyautoattack: "there are 1 points with zero gradient!"), through print, the
warnings module or logging. During a plugin call all three are captured; each distinct message is recorded once
per unit with the plugin that printed it, and the reports and `harness show` list them as warnings.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterator

MAX_KEPT = 20   # distinct messages kept per unit: a library that prints every batch must not fill the database


class Chatter:
    """The distinct messages of one unit's plugins, in the order first seen, as ``"<plugin>: <message>"``."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, plugin: str, text: str) -> None:
        for line in (line.strip() for line in text.splitlines()):
            message = f"{plugin}: {line}"
            if line and message not in self.messages and len(self.messages) < MAX_KEPT:
                self.messages.append(message)

    @contextlib.contextmanager
    def capture(self, plugin: str) -> Iterator[None]:
        """Route print, warnings and log records of level WARNING and above to this unit's messages (and nowhere
        else while the plugin runs)."""
        out, keep, root = io.StringIO(), _Keep(), logging.getLogger()
        saved = root.handlers[:]
        root.handlers = [keep]
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    yield
                finally:
                    for warning in caught:
                        self.add(plugin, str(warning.message))
        finally:
            root.handlers = saved
            self.add(plugin, out.getvalue())
            for message in keep.messages:
                self.add(plugin, message)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
