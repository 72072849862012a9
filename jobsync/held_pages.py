"""The pages a writer has taken from its queue and not yet stored, and how a commit takes
the first rows of them: a commit can end inside a page (see HOLD_S in jobsync.writer), and
that page's cursor and rejects are stored with its last row, never before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pyarrow as pa

from jobsync.cursor import CursorState
from jobsync.records import JOB_ARROW_SCHEMA, NormalisedPage, Reject


@dataclass(frozen=True, slots=True)
class PageToStore:
    """A normalised page and, for a partition's page, the cursor that holds once it is stored
    (None: unchanged) or `finished` when the partition is complete."""

    page: NormalisedPage
    partition_key: str | None = None
    cursor: CursorState | None = None
    finished: bool = False


@dataclass(frozen=True)
class Batch:
    """What one commit stores: rows, the rejects and cursor moves of the pages it completes
    (a cursor of None: the partition is finished), and how many pages with records those are."""

    rows: pa.Table
    rejects: list[Reject]
    cursors: dict[str, CursorState | None]
    pages: int


@dataclass
class HeldPages:
    """Pages in the order they came; the first `stored` rows of the first one are stored."""

    pages: deque[PageToStore] = field(default_factory=deque)
    stored: int = 0
    rows: int = 0  # rows held and not yet stored

    def add(self, item: PageToStore) -> None:
        self.pages.append(item)
        self.rows += item.page.rows.num_rows

    def take(self, count: int) -> Batch:
        """The first `count` rows held (at most `rows`), with every page they complete: a
        page completes once its last row is taken, and a page without rows once the rows
        before it are."""
        if not 0 <= count <= self.rows:
            raise ValueError(f"cannot take {count} of {self.rows} rows held")
        tables: list[pa.Table] = []
        rejects: list[Reject] = []
        cursors: dict[str, CursorState | None] = {}
        pages = 0
        left = count
        while self.pages:
            item = self.pages[0]
            rest = item.page.rows.num_rows - self.stored
            if rest > left:  # the commit ends inside this page
                if left:
                    tables.append(item.page.rows.slice(self.stored, left))
                    self.stored += left
                break
            if rest:
                tables.append(item.page.rows.slice(self.stored))
            left -= rest
            self.pages.popleft()
            self.stored = 0
            rejects.extend(item.page.rejects)
            pages += 1 if item.page.count else 0
            if item.partition_key is not None and (item.finished or item.cursor is not None):
                cursors[item.partition_key] = None if item.finished else item.cursor
        self.rows -= count
        rows = pa.concat_tables(tables) if tables else JOB_ARROW_SCHEMA.empty_table()
        return Batch(rows, rejects, cursors, pages)
