"""Warnings with stable ids, as AutoAttack's flags have: every automatic warning a run or a report gives
carries one of the ids below, and docs/warnings.md explains each (what it means, why it matters, what to
do). Scripts and tests match the id; the wording may improve."""

from __future__ import annotations

from dataclasses import dataclass

NOTICE_IDS: dict[str, str] = {
    "transfer-only": "a test-time defense was attacked only through the bare model",
    "randomized-unverified": "a randomised defense was never attacked with EOT",
    "not-converged": "doubling the adaptive attack's budget still lowered the worst case",
    "black-box-beats-white-box": "a black-box attack did better than every white-box one",
    "zero-gradient": "attacks succeed where the input gradient is exactly zero",
    "indistinguishable": "a defense's worst case cannot be told from the reference's",
    "above-reported": "the undefended model measures clearly above the paper's number",
    "small-sample": "the examples are too few for intervals narrower than ±5 points",
    "plugin-output": "a plugin printed, warned or logged while it ran",
}


@dataclass(frozen=True)
class Notice:
    """One warning: its stable id and a sentence that names what it concerns and what to do."""

    id: str
    text: str

    def __post_init__(self) -> None:
        if self.id not in NOTICE_IDS:
            raise ValueError(f"unknown warning id {self.id!r}; add it to harness.analysis.notices.NOTICE_IDS and "
                             "docs/warnings.md")

    def __str__(self) -> str:
        return f"warning [{self.id}]: {self.text}"
