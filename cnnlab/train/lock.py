"""One writer per run directory: an advisory lock file, WORKDIR/.lock, held while a run trains.

Two processes on one workdir (a second terminal, a job re-launched while the first still runs)
would both write its checkpoints and logs. Every run (`train`, each grid cell, each seed of a
batched group and the group's own directory, each fine-tuning phase) takes the lock before it
writes anything there; a second process gets a one-line `WorkdirBusy` naming the holder's host
and pid. The lock is the kernel's `flock` (released when its holder exits, however it exits);
the file's text names the holder. A file that still names a process which no longer holds the
lock (killed before it could clear it) is taken over with a warning. With several JAX
processes (multi-host), only process 0 takes the lock, for the run as a whole; the others
follow it. On a filesystem without `flock` the run goes on unlocked after a warning.
"""

import errno
import fcntl
import os
import socket
from pathlib import Path

import jax

from cnnlab.errors import WorkdirBusy


def holder_text() -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()}"


class WorkdirLock:
    NAME = ".lock"

    def __init__(self, workdir, warn=print):
        self.path = Path(workdir) / self.NAME
        self.warn, self.fd = warn, None

    def acquire(self) -> "WorkdirLock":
        if jax.process_index() != 0:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd) or "another process"
            os.close(fd)
            raise WorkdirBusy(
                f"{self.path.parent} is in use by {holder} (lock {self.path}); wait for that run "
                f"to finish or stop it, or use another --workdir"
            ) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            self.warn(f"warning: {self.path}: this filesystem cannot lock files; not locked")
            return self
        before = _read(fd)
        if before and before != holder_text():
            self.warn(
                f"warning: {self.path} named {before}, which no longer holds it (stopped "
                f"without clearing it); taking the run directory over"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_text().encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the holder's text and unlock (closing the file unlocks it too)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
