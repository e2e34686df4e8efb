"""Product titles as the towers and BM25 read them: control characters out, whitespace collapsed, length capped.

Every title is normalised the same way, whatever file or format it came from:

* control characters (Unicode category Cc: tabs, newlines, NUL, escape codes, C1 controls) become spaces; a
  title holding one usually comes from a broken export, so they are counted and reported;
* runs of whitespace become one space, and the ends are stripped (not reported: it changes nothing a tokenizer
  sees);
* a title longer than ``max_chars`` (``data.max_title_chars``, default :data:`MAX_TITLE_CHARS`) is cut to
  ``max_chars`` characters and counted. The text tower reads ``model.tower.max_text_length`` tokens (48 by
  default, about 200 characters of English); a title several times longer is nearly always a description pasted
  into the title column, and tokenising it whole only costs time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

__all__ = ["MAX_TITLE_CHARS", "TitleStats", "normalise_titles"]

MAX_TITLE_CHARS = 512

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")


@dataclass
class TitleStats:
    """How many titles :func:`normalise_titles` changed in a way worth telling, with the first row of each."""

    n_control: int = 0
    n_truncated: int = 0
    max_chars: int = MAX_TITLE_CHARS
    longest: int = 0  # characters of the longest title before cutting
    first_control: int | None = None  # 0-based position of the first title with a control character
    first_truncated: int | None = None

    def messages(self, what: str = "titles", where: Callable[[int], str] | None = None) -> list[str]:
        """One line per kind of change (none when nothing changed); ``where`` names a 0-based position."""
        out = []

        def first(pos: int | None) -> str:
            return f", first at {where(pos)}" if where is not None and pos is not None else ""

        if self.n_control:
            out.append(f"{what}: {self.n_control} held control characters (tabs, newlines, ...)"
                       f"{first(self.first_control)}: replaced by spaces")
        if self.n_truncated:
            out.append(f"{what}: {self.n_truncated} longer than {self.max_chars} characters (data.max_title_chars; "
                       f"the longest has {self.longest}{first(self.first_truncated)}): cut to {self.max_chars}")
        return out


def normalise_titles(titles: pd.Series, max_chars: int | None = MAX_TITLE_CHARS) -> tuple[pd.Series, TitleStats]:
    """Normalised titles (same index, object dtype) and what was changed; see the module docstring.

    ``max_chars`` None or 0 keeps every length.
    """
    s = titles.fillna("").astype(str)
    stats = TitleStats(max_chars=int(max_chars or 0))
    has_control = s.str.contains(_CONTROL, regex=True).to_numpy(dtype=bool)
    stats.n_control = int(has_control.sum())
    if stats.n_control:
        stats.first_control = int(has_control.argmax())
        s = s.str.replace(_CONTROL, " ", regex=True)
    s = s.str.replace(_SPACES, " ", regex=True).str.strip()
    if max_chars:
        lengths = s.str.len().to_numpy()
        long = lengths > max_chars
        stats.n_truncated = int(long.sum())
        if stats.n_truncated:
            stats.first_truncated = int(long.argmax())
            stats.longest = int(lengths.max())
            s = s.where(~long, s.str.slice(0, max_chars).str.rstrip())
    return s.astype(object), stats
