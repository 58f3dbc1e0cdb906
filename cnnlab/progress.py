"""Progress bars: tqdm on a terminal; off one (a log file, a TPU VM's log, CI) a plain line at
most every `every_s` seconds and at the end, instead of tqdm's carriage-return frames.

    bar = progress.bar(total=300, desc="train resnet20", unit="step")
    bar.update(1); bar.set_postfix(loss="0.123"); bar.close()
"""

import sys
import time

from tqdm import tqdm

EVERY_S = 30.0  # off a terminal: seconds between lines


def _on_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable=None, *, total=None, desc="", unit="it", initial=0, disable=False, file=None):
    """A tqdm bar when `file` (default stderr) is a terminal, else a `PlainProgress`."""
    file = file or sys.stderr
    if _on_terminal(file):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                    disable=disable, dynamic_ncols=True, file=file)  # fmt: skip
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                         disable=disable, file=file)  # fmt: skip


def write(message: str, file=None) -> None:
    """Print a line (to stdout, like tqdm.write) without breaking a live bar."""
    tqdm.write(message, file=file or sys.stdout)


class PlainProgress:
    """The part of tqdm's interface cnnlab uses, printing 'desc: n/total (p%) rate, postfix'."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0,
                 disable=False, file=None, every_s: float = EVERY_S):  # fmt: skip
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n, self.start_n, self.file, self.every_s = initial, initial, file, every_s
        self.postfix, self.t0 = "", time.monotonic()
        self.last = self.t0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        done = f"{self.desc}: {self.n}{of}{pct} {self.unit}s in {elapsed:.0f}s"
        return f"{done}, {rate:.2f} {self.unit}/s{tail}"

    def _print(self) -> None:
        if not self.disable:
            print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if self.n > self.start_n or self.total == 0:
            self._print()
        self.disable = True  # a second close prints nothing
