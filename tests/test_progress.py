"""Progress reports: a bar on a terminal, bounded plain lines in a log, nothing when quiet."""

import io
import re

import numpy as np
import pytest

from lacss_core import _progress, cli
from lacss_core._progress import Progress, parse_log_every, track

LINE = re.compile(r"^training: (\d+)/(\d+) steps \(\d+%\)  loss \d\.\d{4}  .* elapsed")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def _run(steps, stream, **kwargs):
    with Progress(steps, "training", stream=stream, **kwargs) as progress:
        for done in range(kwargs.get("initial", 0) + 1, steps + 1):
            progress.update(done, loss=np.float32(1.0 / done))
    return stream.getvalue()


def _steps(text):
    return [int(LINE.match(line).group(1)) for line in text.splitlines()]


def test_a_log_gets_about_twenty_short_lines_and_no_redraws():
    text = _run(590, io.StringIO())
    assert "\r" not in text
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines[:3]
    assert max(len(line) for line in lines) < 100
    assert _steps(text) == list(range(30, 590, 30)) + [590]  # every ceil(590 / 20) steps, last


def test_log_every_steps_and_a_resumed_run_keep_to_the_multiples():
    assert _steps(_run(23, io.StringIO(), every=5)) == [5, 10, 15, 20, 23]
    assert _steps(_run(23, io.StringIO(), every=5, initial=12)) == [15, 20, 23]
    assert _run(3, io.StringIO(), every=5, initial=3) == ""  # nothing left to do, nothing said


def test_log_every_seconds(monkeypatch):
    clock = iter(np.arange(0.0, 100.0, 4.0))  # each update is 4 s after the one before
    monkeypatch.setattr(_progress.time, "monotonic", lambda: float(next(clock)))
    assert _steps(_run(10, io.StringIO(), seconds=10.0)) == [3, 6, 9, 10]


def test_a_terminal_gets_a_bar_and_none_shows_nothing():
    pytest.importorskip("tqdm")
    text = _run(50, Terminal())
    assert "\r" in text and "50/50" in text and "training: 50/50 steps" not in text
    assert _run(50, Terminal(), show="none") == ""
    assert _run(50, io.StringIO(), show="terminal") == ""  # a bar or nothing: not a terminal
    assert LINE.match(_run(5, Terminal(), show="lines"))


def test_track_and_write():
    stream = io.StringIO()
    with Progress(2, "tiles", "tile", stream=stream) as progress:
        progress.write("a message")
        progress.set_total(3)
        progress.update(3)
    assert stream.getvalue().startswith("a message\ntiles: 3/3 tiles (100%)")
    stream = io.StringIO()
    assert list(track("ab", "lacss predict", "image", stream=stream)) == ["a", "b"]
    assert stream.getvalue().count("\n") == 2 and "2/2 images" in stream.getvalue()


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, (None, None)),
        ("auto", (None, None)),
        ("7", (7, None)),
        (7, (7, None)),
        ("2.5s", (None, 2.5)),
    ],  # fmt: skip
)
def test_parse_log_every(text, expected):
    assert parse_log_every(text) == expected


@pytest.mark.parametrize("text", ["0", "-2s", "ten", "1.5", "s", True])
def test_parse_log_every_rejects_bad_values_by_name(text):
    with pytest.raises(ValueError, match="--log-every"):
        parse_log_every(text)


def test_train_refuses_a_bad_log_every_before_any_work(tmp_path, capsys):
    argv = ["train", str(tmp_path), "-o", str(tmp_path / "m.keras"), "--log-every", "0"]
    assert cli.main(argv) == 2
    assert "--log-every: must be > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quiet"])  # the demo's output is its result; it has no --quiet


@pytest.mark.slow
def test_lacss_train_log_lines_and_quiet(tmp_path, capsys):
    from test_cli_train import TOY, _write_samples

    data = _write_samples(tmp_path / "train", weak=False)
    out = tmp_path / "m.keras"
    toy = [*TOY, "--steps", "3"]  # the last --steps wins
    assert cli.main(["train", str(data), "-o", str(out), *toy, "--log-every", "2"]) == 0
    printed = capsys.readouterr().out
    assert "\r" not in printed
    progress = [line for line in printed.splitlines() if line.startswith("training")]
    assert _steps("\n".join(progress)) == [2, 3]  # after the report of the chosen sizes
    assert printed.splitlines()[-1].startswith(f"wrote {out}")
    argv = ["train", str(data), "-o", str(out), *toy, "--overwrite", "--quiet"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert all(line.startswith(("warning", "W")) for line in captured.err.splitlines())
