"""Progress reports that read well on a terminal and in a log file.

A tqdm bar redraws itself in place with carriage returns. On a terminal that is what one wants;
in a log file (``lacss demo > log 2>&1``, CI, nohup) every redraw stays, and a run becomes one
line of hundreds of redraws. So :class:`Progress` draws a bar only when its stream is a terminal;
anywhere else it writes one plain line every ``every`` steps or ``seconds`` seconds, and after
the last step, for example::

    training: 120/400 steps (30%)  loss 0.1834  24 s elapsed, ~56 s left

``lacss train``, ``lacss demo`` and ``lacss predict`` report through it (``--log-every``,
``--quiet``).
"""

from __future__ import annotations

import math
import numbers
import sys
import time

#: How a ``Progress`` shows itself: ``"auto"`` a bar on a terminal, lines elsewhere;
#: ``"terminal"`` a bar on a terminal, nothing elsewhere; ``"bar"``, ``"lines"``, ``"none"``.
SHOW_MODES = ("auto", "terminal", "bar", "lines", "none")
#: Lines a run writes by default when neither ``every`` nor ``seconds`` is given.
DEFAULT_LINES = 20


def parse_log_every(text, option: str = "--log-every") -> tuple[int | None, float | None]:
    """``(every, seconds)`` from ``"N"`` (a line every N steps) or ``"Ns"`` (every N seconds).

    ``None`` or ``"auto"`` gives ``(None, None)``: about ``DEFAULT_LINES`` lines per run. An int
    is a step count. Raises ValueError naming ``option`` for anything else or a value <= 0.
    """
    if text is None or text == "auto":
        return None, None
    if isinstance(text, bool):
        raise ValueError(f"{option}: expected N (steps) or Ns (seconds), got {text!r}")
    if isinstance(text, int):
        text = str(text)
    raw = str(text).strip()
    seconds = raw.endswith("s")
    try:
        value = float(raw[:-1]) if seconds else int(raw)
    except ValueError:
        raise ValueError(
            f"{option}: expected N (a line every N steps) or Ns (every N seconds), got {text!r}"
        ) from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{option}: must be > 0, got {text!r}")
    return (None, value) if seconds else (value, None)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the [io] extra; lines need nothing
        return None
    return tqdm


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _format_value(value) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.4f}"  # Python and NumPy floats
    return str(value)


class Progress:
    """Progress of ``total`` units of work: a bar on a terminal, bounded lines elsewhere.

    Args:
        total: units in the whole run (steps, images, tiles), >= 0.
        desc: what runs, e.g. ``"training"``; starts every line.
        unit: the unit's name (singular); lines say ``"120/400 steps"``.
        show: one of ``SHOW_MODES``; whether ``stream`` is a terminal is asked once, here. A bar
            needs tqdm; without it a bar becomes lines.
        stream: where to write (default ``sys.stderr``).
        every: in lines mode, a line whenever the count reaches a multiple of ``every``.
        seconds: in lines mode, a line when ``seconds`` passed since the last one (at an update).
            With neither ``every`` nor ``seconds``: ``every = ceil(total / DEFAULT_LINES)``.
        initial: the count the run starts from (a resumed training run).
        leave: keep the bar on screen when done.

    Use it as a context manager (or call ``close``); ``update(done, **values)`` after each unit
    sets the count (absolute) and the values shown after it (floats with 4 decimals).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        *,
        show: str = "auto",
        stream=None,
        every: int | None = None,
        seconds: float | None = None,
        initial: int = 0,
        leave: bool = True,
    ):
        if show not in SHOW_MODES:
            raise ValueError(f"show must be one of {SHOW_MODES}, got {show!r}")
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        if every is None and seconds is None:
            every = max(1, math.ceil(self.total / DEFAULT_LINES))
        self.every, self.seconds = every, seconds
        self.done = self._last_line = self._initial = initial
        self._start = self._last_time = time.monotonic()
        self._bar = None
        self.mode = self._mode(show)
        if self.mode == "bar":
            self._bar = _tqdm()(
                total=self.total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                leave=leave,
                dynamic_ncols=True,
            )

    def _mode(self, show: str) -> str:
        if show == "none":
            return "none"
        if show in ("auto", "terminal") and not _is_terminal(self.stream):
            return "lines" if show == "auto" else "none"
        if show != "lines" and _tqdm() is not None:
            return "bar"
        return "lines"

    def set_total(self, total: int) -> None:
        """Change the total (work found on the way, e.g. tiles split further)."""
        self.total = int(total)
        if self._bar is not None:
            self._bar.total = self.total

    def update(self, done: int, **values) -> None:
        """Set the count to ``done`` (and the total's share shown) and the values after it."""
        self.done = done
        if self._bar is not None:
            if values:
                self._bar.set_postfix({k: _format_value(v) for k, v in values.items()}, False)
            self._bar.update(done - self._bar.n)
        elif self.mode == "lines" and self._line_due(done):
            self._write_line(done, values)

    def _line_due(self, done: int) -> bool:
        if done >= self.total:
            return done > self._last_line
        if self.every is not None and done // self.every > self._last_line // self.every:
            return True
        return self.seconds is not None and time.monotonic() - self._last_time >= self.seconds

    def _write_line(self, done: int, values: dict) -> None:
        now = time.monotonic()
        parts = [f"{self.desc}: {done}/{self.total} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * done / self.total:.0f}%)"
        parts += [f"{key} {_format_value(value)}" for key, value in values.items()]
        timing = f"{_duration(now - self._start)} elapsed"
        if 0 < done < self.total:
            rate = (now - self._start) / max(1, done - self._initial)
            timing += f", ~{_duration(rate * (self.total - done))} left"
        parts.append(timing)
        self.write("  ".join(parts))
        self._last_line, self._last_time = done, now

    def write(self, message: str) -> None:
        """Print a line on the stream without breaking the bar (nothing in mode ``"none"``)."""
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Remove (or leave) the bar; further updates are ignored."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.mode = "none"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items, desc: str, unit: str, **kwargs):
    """Yield the elements of ``items`` (a sized collection) with a ``Progress`` over them."""
    items = list(items)
    with Progress(len(items), desc, unit, **kwargs) as progress:
        for i, item in enumerate(items):
            yield item
            progress.update(i + 1)
