"""The failures cnnlab reports as one line: every one is a `CnnlabError` whose message names the
thing that is wrong and what to do. Entry points catch `CnnlabError` (one definition) and print
`error: <message>`; anything else is a bug and keeps its traceback (with --debug)."""


class CnnlabError(Exception):
    """A failure the user can fix; the message says what is wrong and what to do."""


class ConfigError(CnnlabError, ValueError):
    """A config value that cannot work."""


class DataError(CnnlabError, ValueError):
    """Missing or unusable data."""


class CheckpointError(CnnlabError, ValueError):
    """A checkpoint that cannot be restored into this run."""


class NonFiniteLoss(CnnlabError, RuntimeError):
    """Training produced a NaN/inf loss or statistics; the last good checkpoint is kept."""


class WorkdirBusy(CnnlabError):
    """Another process is writing this run directory (its lock file names it)."""


class StorageError(CnnlabError, OSError):
    """The filesystem refused a write (full, read-only, not a directory); saved files are kept."""


def describe(e: BaseException, limit: int = 200) -> str:
    """An exception from a library as one short line ('ValueError: ...'), for a message that
    wraps it; TensorStore's long 'See full ... details' tail is cut."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text.split(" See full")[0][:limit]
