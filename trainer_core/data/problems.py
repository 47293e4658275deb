"""Problems found in a dataset, each with the row (0-based), line (JSON Lines, 1-based) and column."""

from __future__ import annotations

from dataclasses import dataclass

from trainer_core.base.errors import EXIT_USAGE, VlmtuneError


@dataclass(frozen=True)
class DataProblem:
    row: int | None
    column: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        elif self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def to_dict(self) -> dict:
        return {"row": self.row, "line": self.line, "column": self.column, "message": self.message}


class DataError(VlmtuneError, ValueError):
    exit_code = EXIT_USAGE

    """Data that cannot be trained on, with every problem found (shown up to a limit)."""

    def __init__(self, problems: list[DataProblem], source: str | None = None, shown: int = 20):
        self.problems = problems
        self.source = source
        head = f"dataset {source}" if source else "dataset"
        lines = [f"{head} has {len(problems)} problem{'s' if len(problems) != 1 else ''}:"]
        lines += [f"  - {p}" for p in problems[:shown]]
        if len(problems) > shown:
            lines.append(f"  ... and {len(problems) - shown} more")
        super().__init__("\n".join(lines))
