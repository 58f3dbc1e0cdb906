"""Preemption: SIGTERM (a spot VM's notice, Slurm's, Kubernetes') or SIGINT (Ctrl-C) during
training ends the current step, saves it, and stops the run with `Preempted`.

`stop_on_signals()` is held around the training loop (`cnnlab.train.loop.drive`): while it is
held, the two signals only raise a flag that the loop reads after each step (`agreed()`: with
several processes, every process reads whether any received one, so all stop at one step). The
loop then saves a checkpoint of that step (state and data iterator, without metrics: nothing was
evaluated) and raises `Preempted`; the entry points print one line saying where the run stopped
and how to resume, and exit with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as
a shell reports a process the signal ended. A second SIGTERM while the step is saved is noted and
ignored, so it cannot cut the save short.

A second Ctrl-C (SIGINT) stops at once, whatever the process is doing (an XLA compile, a step,
a save): one line says what is kept (the last complete checkpoint; orbax's saves are atomic, so a
save cut short leaves the previous one) and the process exits with 130. Python runs a signal
handler only between bytecodes of the main thread, which a long compile does not reach, so the
count is kept by a watcher thread that the C-level handler wakes through `signal.set_wakeup_fd`.
The workdir lock is the kernel's flock, released on exit. Outside the loop the previous handlers
are in place. Handlers can only be installed from the main thread; elsewhere (a notebook's
worker thread) signals keep their own behaviour.
"""

import contextlib
import os
import signal
import threading
from pathlib import Path

import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_kept: list = []  # what a stop at once keeps, innermost last (`stop_on_signals(kept=...)`)


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
    """The first signal this process received while `stop_on_signals` was held, or None."""
    return _received[0] if _received else None


def agreed() -> int | None:
    """The first signal any process of the run received, or None; the same answer on every
    process at the same step. With one process that is `requested()`; with several each
    process's flag is all-gathered (a collective every process reaches at the same step), so
    that they stop together: a save of a multi-process checkpoint needs every process, and
    processes that saw SIGTERM at different steps would otherwise wait for each other forever.
    The training loop asks it at every step with one process and only after the steps where it
    reads the device anyway (log and eval steps) with several, so that agreeing adds no wait.
    """
    mine = requested()
    import jax  # here: the module stays light for the entry points' early imports

    if jax.process_count() == 1:
        return mine
    from jax.experimental import multihost_utils

    flags = np.ravel(multihost_utils.process_allgather(np.array([mine or 0], np.int32)))
    return next((int(f) for f in flags if f), None)


def last_checkpoint(directory) -> str:
    """'checkpoint N in DIR' (the newest complete step on disk) or 'no checkpoint yet in DIR'."""
    steps = [int(p.name) for p in Path(directory).glob("*") if p.name.isdigit()]
    return (
        f"checkpoint {max(steps)} in {directory}" if steps else f"no checkpoint yet in {directory}"
    )


def name(signum: int) -> str:
    return signal.Signals(signum).name


def stop_now_text() -> str:
    kept = _kept[-1] if _kept else "the last complete checkpoint"
    kept = kept() if callable(kept) else kept
    return (
        f"stopped at once by a second Ctrl-C (SIGINT); kept: {kept}; a save in progress is "
        "dropped; run the same command to resume"
    )


def _watch(fd: int) -> None:
    """Count SIGINTs as the C-level handler writes them to `fd`; exit 130 at the second."""
    seen = 0
    while data := os.read(fd, 64):  # b'' once the write end is closed
        seen += data.count(signal.SIGINT)
        if seen >= 2:
            os.write(2, ("\n" + stop_now_text() + "\n").encode())
            os._exit(128 + signal.SIGINT)
    os.close(fd)


@contextlib.contextmanager
def stop_on_signals(kept=None, signals=SIGNALS):
    """Note `signals` (SIGTERM and SIGINT; launch.slurm adds SIGUSR2) instead of dying, for the
    duration (nestable); a second SIGINT exits at once, saying `kept` (what is kept, or a
    function that says it then: it runs in the watcher thread, so it may only look at files)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if kept:
        _kept.append(kept)
    try:
        previous = {s: signal.getsignal(s) for s in signals}
        if all(h is _note for h in previous.values()):  # held already (a grid around a run)
            yield
            return
        with _watcher():
            _received.clear()
            for s in signals:
                signal.signal(s, _note)
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
                _received.clear()
    finally:
        if kept:
            _kept.pop()


@contextlib.contextmanager
def _watcher():
    read, write = os.pipe()
    os.set_blocking(write, False)  # set_wakeup_fd's requirement
    threading.Thread(target=_watch, args=(read,), name="cnnlab-sigint", daemon=True).start()
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write)  # the watcher reads b'' and ends
