"""Write one benchmark's section of docs/performance.md, leaving the other sections alone."""

from __future__ import annotations

import os

DOC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "performance.md"
)


def write_section(heading: str, section: str, path: str = DOC) -> None:
    """Replace the section that starts with the line ``heading`` (up to the next ``## ``) by
    ``section``, or append ``section`` if there is none."""
    text = open(path).read() if os.path.exists(path) else "# Performance\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
