"""The errors raised for bad input data, and the tally of rows skipped instead.

Every problem with user data surfaces as a :class:`DataError` whose message names the file, the row (1-based
data row, as the user counts them: the header line of a CSV is not a row) and the field, so that the user can
jump straight to it. With ``skip_bad`` the loaders drop bad rows instead and count them in a :class:`BadRows`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataError", "UnknownLabelError", "BadRows"]


class DataError(ValueError):
    """Bad input data: an unreadable file, a missing column, or a bad row.

    The message starts with the location (``file, row N (line L), field 'x': ...``) so that it reads well in a
    terminal; the parts are also kept as attributes for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.detail = message
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return (", ".join(parts) + ": " + self.detail) if parts else self.detail

    def __str__(self) -> str:  # KeyError (a base of UnknownLabelError) would otherwise repr() the message
        return self._format()


class UnknownLabelError(DataError, KeyError):
    """A label value that the label scheme does not know (both a :class:`DataError` and a ``KeyError``)."""



@dataclass
class BadRows:
    """Tally of rows skipped (``skip_bad=True``) by reason, with the first few examples of each reason.

    Pass one instance to several loaders to get one summary; loaders add the number of rows they read to
    ``n_rows`` so the summary can give a percentage.
    """

    max_examples: int = 5
    n_rows: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        reason: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        message: str = "",
    ) -> None:
        """Count one skipped row; keep it as an example while fewer than ``max_examples`` have this reason."""
        if self.counts[reason] < self.max_examples:
            self.examples.append(
                {"reason": reason, "file": None if file is None else str(file), "row": row, "field": field,
                 "message": message}
            )
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        """Number of rows skipped."""
        return sum(self.counts.values())

    def __bool__(self) -> bool:  # "if report:" should mean "something was skipped", not "the object exists"
        return self.total > 0

    def summary(self) -> str:
        """``skipped 3 of 120 rows (2.5%): empty title 2, unknown label 1``."""
        total = self.total
        head = f"skipped {total} of {self.n_rows} rows" if self.n_rows else f"skipped {total} rows"
        if self.n_rows:
            head += f" ({100.0 * total / self.n_rows:.1f}%)"
        if not total:
            return head
        return head + ": " + ", ".join(f"{r} {n}" for r, n in self.counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"n_rows": self.n_rows, "skipped": self.total, "counts": dict(self.counts),
                "examples": list(self.examples)}
