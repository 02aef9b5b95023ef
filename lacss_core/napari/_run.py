"""Running a widget's job in a worker thread: buttons, progress, cancel and error notifications.

A job is a function ``work(job)`` that runs in a napari ``thread_worker`` (the viewer stays
responsive). It reports progress with ``job.progress(value, maximum, text)`` (delivered to the
widget in the GUI thread through a Qt signal) and calls ``job.check()`` where it may stop; Cancel
makes the next ``check()`` raise :class:`Cancelled` (training checks after every optimizer step,
segmentation between planes). An error in a job is shown as a napari notification naming the
problem, not as a traceback; the traceback goes to the ``lacss_core.napari`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from qtpy.QtCore import QObject, Signal

log = logging.getLogger("lacss_core.napari")


class Cancelled(Exception):
    """Raised by :meth:`Job.check` after the user pressed Cancel."""


class _Signals(QObject):
    progress = Signal(int, int, str)


class Job:
    """What a running job sees: its progress signal and its cancel flag."""

    def __init__(self):
        self.signals = _Signals()
        self.cancel_requested = threading.Event()

    def progress(self, value: int, maximum: int, text: str) -> None:
        """Report progress to the widget (thread-safe, through a signal)."""
        self.signals.progress.emit(int(value), int(maximum), text)

    def check(self) -> None:
        """Raise ``Cancelled`` if the user asked to stop."""
        if self.cancel_requested.is_set():
            raise Cancelled


def notify_error(message: str) -> None:
    """An error notification in napari."""
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    """An information notification in napari."""
    from napari.utils.notifications import show_info

    show_info(message)


def notify_warning(message: str) -> None:
    """A warning notification in napari."""
    from napari.utils.notifications import show_warning

    show_warning(message)


def connect_while_alive(widget, connections) -> None:
    """Connect each ``(signal, callback)`` pair (napari events or psygnal signals) until the
    widget's Qt widget is destroyed (its dock closed, the viewer closed): a callback must not
    reach a deleted Qt widget."""
    for signal, callback in connections:
        signal.connect(callback)

    def disconnect(*_):
        for signal, callback in connections:
            with contextlib.suppress(Exception):  # already gone with its owner
                signal.disconnect(callback)

    widget.native.destroyed.connect(disconnect)


def describe_error(exc: BaseException) -> str:
    """The message a user sees: a ValueError is a problem with the input, named in its message;
    anything else also says what kind of error it was."""
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class RunControls(Container):
    """Run and Cancel buttons, a progress bar and a status line; one job at a time.

    Args:
        what: the action, e.g. ``"Segment"``; the Run button's text and the notifications' prefix.
        on_run: called (in the GUI thread) when Run is pressed; it checks the inputs and calls
            :meth:`start`. A ``ValueError`` it raises is shown as a notification.

    ``on_done(result)`` of :meth:`start` shows the result and returns the status line to show.
    """

    def __init__(self, what: str, on_run):
        self.what = what
        self.run_button = PushButton(text=what)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        super().__init__(
            widgets=[self.run_button, self.cancel_button, self.progress, self.status],
            labels=False,
        )
        self._on_run = on_run
        self.worker = None
        self.job: Job | None = None
        self._closed = False
        self.run_button.changed.connect(self._run_pressed)
        self.cancel_button.changed.connect(self.cancel)
        self.native.destroyed.connect(self._close)

    @property
    def running(self) -> bool:
        """Whether a job is running."""
        return self.worker is not None

    def _run_pressed(self, *_):
        try:
            self._on_run()
        except ValueError as exc:
            self.fail(exc)

    def start(self, work, on_done) -> None:
        """Run ``work(job)`` in a worker thread; ``on_done(result)`` in the GUI thread after."""
        from napari.qt.threading import create_worker

        if self.running:
            raise ValueError(f"{self.what} is already running")
        job = Job()
        job.signals.progress.connect(self._show_progress)
        self.job = job
        self.worker = create_worker(_outcome, work, job, _start_thread=False)
        self.worker.returned.connect(lambda outcome: self._finish(outcome, on_done))
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = "starting..."
        self.progress.max, self.progress.value = 0, 0  # busy until the first report
        self.worker.start()

    def cancel(self, *_) -> None:
        """Ask the running job to stop at its next check."""
        if self.job is not None:
            self.job.cancel_requested.set()
            self.cancel_button.enabled = False
            self.status.value = "cancelling (after the current step)..."

    def _close(self, *_) -> None:
        """The widget is gone (dock or viewer closed): stop the job, show nothing."""
        self._closed = True
        if self.job is not None:
            self.job.cancel_requested.set()

    def fail(self, exc: BaseException) -> None:
        """Show a failed job's error in the status line and as a notification."""
        message = f"LACSS {self.what.lower()}: {describe_error(exc)}"
        self.status.value = message
        notify_error(message)

    def _show_progress(self, value: int, maximum: int, text: str) -> None:
        self.progress.max = max(maximum, 0)
        self.progress.value = min(value, maximum) if maximum > 0 else 0
        self.status.value = text

    def _finish(self, outcome, on_done) -> None:
        if self._closed:
            return
        self.worker, self.job = None, None
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.progress.max, self.progress.value = 1, 0
        kind, value = outcome
        if kind == "cancelled":
            self.status.value = f"{self.what} cancelled"
            notify_info(f"LACSS {self.what.lower()} cancelled")
            return
        if kind == "failed":
            self.fail(value)
            return
        self.progress.value = 1
        try:
            self.status.value = on_done(value)
        except Exception as exc:  # showing the result failed: still a notification, not a crash
            log.exception("showing the result of %s failed", self.what)
            self.fail(exc)


def _outcome(work, job: Job):
    """``("done", result)``, ``("cancelled", None)`` or ``("failed", exception)``: the worker
    never raises, so napari shows no traceback and the widget decides what the user sees."""
    try:
        return "done", work(job)
    except Cancelled:
        return "cancelled", None
    except ValueError as exc:  # bad input: the message says it all
        log.debug("LACSS job stopped on bad input", exc_info=True)
        return "failed", exc
    except Exception as exc:
        log.exception("LACSS job failed")
        return "failed", exc
