"""An audit's result: every check it made, whether it held, and the figures behind it.

The exit code is part of the contract: 0 only when every check held and the replay reached the
end of the epoch; 1 when a check failed (the first failing item is named); 2 when the audit could
not be carried out (a source that has no genesis record or no block at a height the epoch needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, MISMATCH, INCOMPLETE = 0, 1, 2


@dataclass
class Check:
    item: str  # what was checked: "height 7", "epoch 2 weights", "chain record #14", ...
    ok: bool
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.item}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Report:
    epoch: int
    source: str
    checks: list[Check] = field(default_factory=list)
    incomplete: str | None = None  # why the replay stopped before the epoch's end

    def add(self, item: str, ok: bool, detail: str = "", **figures: Any) -> Check:
        check = Check(item, ok, detail, figures)
        self.checks.append(check)
        return check

    def stop(self, item: str, detail: str, **figures: Any) -> None:
        """The audit cannot go on (missing input): recorded as a failed check and as the reason."""
        self.add(item, False, detail, **figures)
        self.incomplete = f"{item}: {detail}"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def exit_code(self) -> int:
        if self.incomplete is not None:
            return INCOMPLETE
        return MISMATCH if self.failures else OK

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "source": self.source,
            "ok": self.exit_code == OK,
            "exit_code": self.exit_code,
            "incomplete": self.incomplete,
            "failures": [c.item for c in self.failures],
            "checks": [{"item": c.item, "ok": c.ok, "detail": c.detail, **c.figures} for c in self.checks],
        }
