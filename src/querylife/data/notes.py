"""Messages about how data was read: which column fed what, which split rule, what was normalised, and warnings.

The loaders add to one :class:`Notes` and never print: ``querylife data check`` lists them in its report,
``train`` / ``eval`` print them before the work starts (:meth:`Notes.emit`), and a program reads them from
``Dataset.notes``. The same loading code writes the same lines whichever way the data was named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

__all__ = ["Note", "Notes", "warn_text_only"]

log = logging.getLogger("querylife.data")


@dataclass(frozen=True)
class Note:
    """One message: ``level`` is ``info`` or ``warning``; ``kind`` a short key for programs and tests."""

    level: str
    kind: str
    text: str

    def __str__(self) -> str:
        return ("warning: " if self.level == "warning" else "") + self.text


class Notes:
    """An ordered list of :class:`Note`; the same text added twice is kept once."""

    def __init__(self) -> None:
        self.items: list[Note] = []

    def info(self, kind: str, text: str) -> None:
        self._add(Note("info", kind, text))

    def warn(self, kind: str, text: str) -> None:
        self._add(Note("warning", kind, text))

    def _add(self, note: Note) -> None:
        if note not in self.items:
            self.items.append(note)

    def extend(self, other: Notes) -> None:
        for note in other:
            self._add(note)

    def __iter__(self) -> Iterator[Note]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def warnings(self) -> list[Note]:
        return [n for n in self.items if n.level == "warning"]

    def kinds(self) -> list[str]:
        return [n.kind for n in self.items]

    def to_list(self) -> list[dict[str, str]]:
        """JSON-ready form."""
        return [asdict(n) for n in self.items]

    def emit(self, write: Callable[[str], None] | None = None) -> None:
        """Pass every note to ``write`` (warnings prefixed ``warning:``), or to the ``querylife.data`` logger."""
        for note in self.items:
            if write is not None:
                write(str(note))
            else:
                log.log(logging.WARNING if note.level == "warning" else logging.INFO, note.text)


def warn_text_only(notes: Notes, why: str) -> None:
    """The warning for a catalogue in which no product has a usable image (``why`` says what is missing)."""
    notes.warn("text-only", f"no product has an image ({why}): this run is text-only (the image side sees blank "
                            "images, so image and fusion methods learn nothing from it)")
