"""Preemption: SIGTERM (a spot VM's notice, Slurm's, Kubernetes') or SIGINT (Ctrl-C) during
training ends the current step, saves it, and stops the run with `Preempted`.

`stop_on_signals()` is held around the training loop (`cnnlab.train.loop.drive`): while it is
held, the two signals only raise a flag that the loop reads after each step (`requested()`). The
loop then saves a checkpoint of that step (state and data iterator, without metrics: nothing was
evaluated) and raises `Preempted`; the entry points print one line saying where the run stopped
and how to resume, and exit with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as
a shell reports a process the signal ended. A second signal while the step is saved is noted and
ignored, so it cannot cut the save short (SIGKILL still can: orbax's saves are atomic, the last
complete step is kept). Outside the loop the previous handlers are in place. Handlers can only be
installed from the main thread; elsewhere (a notebook's worker thread) signals keep their own
behaviour.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


class Preempted(Exception):
    """The run stopped on a signal after saving its current step. Not a CnnlabError: nothing is
    wrong with the run, and a grid must stop rather than record a failed cell."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _note(signum, frame) -> None:
    _received.append(signum)


def requested() -> int | None:
    """The first signal received while `stop_on_signals` was held, or None."""
    return _received[0] if _received else None


def name(signum: int) -> str:
    return signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals():
    """Note SIGTERM and SIGINT instead of dying, for the duration (nestable)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    if all(h is _note for h in previous.values()):  # held already (a grid around a run)
        yield
        return
    _received.clear()
    for s in SIGNALS:
        signal.signal(s, _note)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()
