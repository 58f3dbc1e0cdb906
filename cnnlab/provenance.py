"""Where a result came from: code version, packages, machine, devices and command of a run.

Every run writes WORKDIR/provenance.json when it starts or resumes (`record`): a list of
sessions, one per start, each with the step it started from, so that a run resumed on another
machine or after a code change says so. `summary` gives the short line a report prints, and
`differences` names what differs between the sessions of several runs (a grid whose cells came
from two commits, or two CPU models).

The code version is cnnlab's git commit (`git rev-parse HEAD` of the checkout cnnlab is imported
from, when that checkout is the repository's top level), whether the tree had changes (`git
status --porcelain`: untracked files count), and a SHA-256 of `git diff HEAD` (without the
user's or system's git config, so the same code gives the same digest) and of the untracked
files; None outside a git checkout.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

from cnnlab.records import write_json_atomic

PACKAGES = ("cnnlab", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
CODE = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) cnnlab lives in


# The diff must be the same bytes for the same code whoever runs it: no user or system config
# (diff.external, color, noprefix, mnemonicPrefix, textconv, renames, context), fixed prefixes.
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
DIFF = ("diff", "--no-ext-diff", "--no-color", "--no-textconv", "--no-renames", "-U3",
        "--src-prefix=a/", "--dst-prefix=b/", "HEAD", "--")  # fmt: skip
UNTRACKED_HASHED = 10 * 2**20  # an untracked file larger than this counts by its size only


def _git(repo: Path, *args: str, text: bool = True):
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30,
                             env={**os.environ, **GIT_ENV})  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.decode("utf-8", "replace") if text else out.stdout


def _untracked(repo: Path) -> bytes:
    """Each untracked, not ignored file: its path and the SHA-256 of its bytes (its size when
    larger than UNTRACKED_HASHED)."""
    names = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", text=False) or b""
    out = []
    for name in sorted(n for n in names.split(b"\0") if n):
        path = Path(repo) / os.fsdecode(name)  # relative to repo, the top level
        try:
            size = path.stat().st_size
            digest = (hashlib.sha256(path.read_bytes()).hexdigest() if size <= UNTRACKED_HASHED
                      else f"{size} bytes")  # fmt: skip
        except OSError:
            digest = "unreadable"
        out.append(name + b" " + digest.encode())
    return b"\n".join(out)


def code_version(repo: Path = CODE) -> dict:
    """{'commit', 'dirty', 'diff_sha256'} of the git checkout at `repo` (None values outside
    one, or when the repository's top level is not `repo`: cnnlab installed into a virtual
    environment that happens to sit inside some other repository). Dirty: `git status
    --porcelain` lists anything (an untracked new module counts); the digest covers `git diff
    HEAD` and the untracked files."""
    none = {"commit": None, "dirty": None, "diff_sha256": None}
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != Path(repo).resolve():
        return none
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return none
    dirty = bool((_git(repo, "status", "--porcelain", "--untracked-files=normal") or "").strip())
    if not dirty:
        return {"commit": commit.strip(), "dirty": False, "diff_sha256": None}
    changes = (_git(repo, *DIFF, text=False) or b"") + b"\0" + _untracked(repo)
    return {"commit": commit.strip(), "dirty": True,
            "diff_sha256": hashlib.sha256(changes).hexdigest()}  # fmt: skip


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(argv=None) -> list[str]:
    """The command line as typed (`python -m experiments.train --config=...`): sys.orig_argv
    keeps `-m module`, which sys.argv replaces by the module's path."""
    argv = list(sys.orig_argv if argv is None else argv)
    return [os.path.basename(argv[0]), *argv[1:]] if argv else []


def collect(start_step: int = 0, argv=None) -> dict:
    """This process's provenance as JSON-able values."""
    devices = jax.devices()
    return {
        "start_step": int(start_step),
        "code": code_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "device_kind": devices[0].device_kind,
        "platform_name": devices[0].platform,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "command": _command(argv),
    }


def record(workdir: Path, start_step: int) -> dict:
    """Append this session to WORKDIR/provenance.json (process 0 only). -> the session."""
    session = collect(start_step)
    if jax.process_index() != 0:
        return session
    sessions = read(workdir)
    write_json_atomic(Path(workdir) / "provenance.json", {"sessions": [*sessions, session]})
    return session


def read(workdir: Path) -> list[dict]:
    """The sessions a run directory recorded ([] for none, or an unreadable file)."""
    try:
        return json.loads((Path(workdir) / "provenance.json").read_text())["sessions"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def machine(session: dict) -> str:
    return f"{session['cpu']}, {session['device_count']} x {session['device_kind']}"


def commit(session: dict) -> str:
    code = session["code"]
    if not code["commit"]:
        return "not a git checkout"
    dirty = f" + uncommitted changes (diff {code['diff_sha256'][:12]})" if code["dirty"] else ""
    return code["commit"][:12] + dirty


def summary(sessions: list[dict]) -> str:
    """One line for a report: the newest session's code, packages and machine."""
    if not sessions:
        return "Provenance: not recorded (runs from before provenance.json)."
    s = sessions[-1]
    versions = ", ".join(f"{k} {v}" for k, v in s["packages"].items() if k != "cnnlab" and v)
    return (
        f"Provenance: commit {commit(s)}; {versions}; Python {s['python']}; {machine(s)}; "
        f"{s['process_count']} process(es)."
    )


def differences(sessions: list[dict]) -> list[str]:
    """What differs between sessions (of one run, or of a grid's cells): commits, packages,
    machines. [] when they agree."""
    out = []
    packages = lambda s: str(sorted(s["packages"].items()))
    keys = (("code versions", commit), ("machines", machine), ("package versions", packages))
    for what, key in keys:
        seen = sorted({key(s) for s in sessions})
        if len(seen) > 1:
            shown = "; ".join(seen) if what != "package versions" else f"{len(seen)} sets"
            out.append(f"{len(seen)} {what}: {shown}")
    return out
