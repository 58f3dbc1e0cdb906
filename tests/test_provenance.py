"""Provenance: the code version of a git checkout, what a run records per session, and how a
report names cells that came from different commits or machines."""

import copy
import hashlib
import json
import shutil
import subprocess

import jax
from entry import BASE, TINY, cli

from cnnlab import provenance


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def test_code_version_of_a_git_checkout_clean_and_dirty(tmp_path):
    assert provenance.code_version(tmp_path) == {"commit": None, "dirty": None,
                                                 "diff_sha256": None}  # fmt: skip
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert provenance.code_version(tmp_path) == {"commit": head, "dirty": False,
                                                 "diff_sha256": None}  # fmt: skip
    (tmp_path / "a.py").write_text("x = 2\n")
    diff = git(tmp_path, "diff", "HEAD")
    got = provenance.code_version(tmp_path)
    assert got["commit"] == head and got["dirty"] is True
    assert got["diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()


def test_a_run_records_each_session_and_reports_name_mixed_provenance(tmp_path, saved_run):
    """The entry point's run: one session (start 0) with this machine's facts; re-running the
    finished run adds a second (start 4). Two sessions from other commits or CPUs are named."""
    shutil.copytree(saved_run[0], tmp_path / "w")
    (first,) = provenance.read(tmp_path / "w")
    assert first["start_step"] == 0 and first["command"][1:3] == ["-m", "experiments.train"], first
    assert first["packages"]["jax"] == jax.__version__ and first["packages"]["flax"]
    assert first["device_count"] == jax.device_count() and first["process_count"] == 1
    assert first["cpu"] == provenance.cpu_model() and first["code"]["commit"]
    assert first["code"] == provenance.code_version()  # this checkout, as the test runs
    again = cli("experiments.train", f"--config={BASE}", f"--workdir={tmp_path / 'w'}", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    sessions = provenance.read(tmp_path / "w")
    assert [s["start_step"] for s in sessions] == [0, 4]
    assert provenance.differences(sessions) == []
    assert provenance.summary(sessions).startswith("Provenance: commit ")
    other = copy.deepcopy(first)
    other["code"] = {"commit": "f" * 40, "dirty": True, "diff_sha256": "a" * 64}
    other["cpu"] = "Another CPU"
    mixed = provenance.differences([first, other])
    theirs = "ffffffffffff + uncommitted changes (diff aaaaaaaaaaaa)"
    assert mixed[0] == f"2 code versions: {'; '.join(sorted([provenance.commit(first), theirs]))}"
    assert mixed[1].startswith("2 machines: ") and "Another CPU" in mixed[1]
    json.dumps(sessions)  # all JSON
