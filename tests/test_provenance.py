"""Provenance: the code version of a git checkout, what a run records per session, and how a
report names cells that came from different commits or machines."""

import copy
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
    got = provenance.code_version(tmp_path)
    assert got["commit"] == head and got["dirty"] is True and len(got["diff_sha256"]) == 64


def test_the_diff_digest_ignores_the_users_git_config_and_counts_untracked_modules(tmp_path):
    """The same change gives the same digest whatever git config says about diffs (an external
    diff tool, colour, no prefixes, mnemonic prefixes, untracked files hidden); a new untracked
    module makes the tree dirty and its bytes are in the digest; a virtual environment inside
    another repository is not that repository's checkout."""
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    (tmp_path / "a.py").write_text("x = 2\n")
    plain = provenance.code_version(tmp_path)["diff_sha256"]
    tool = tmp_path.parent / f"{tmp_path.name}-difftool.sh"
    tool.write_text("#!/bin/sh\necho external $RANDOM\n")
    tool.chmod(0o755)
    for key, value in (("diff.external", str(tool)), ("color.ui", "always"),
                       ("diff.noprefix", "true"), ("diff.mnemonicPrefix", "true"),
                       ("diff.context", "9"), ("status.showUntrackedFiles", "no")):  # fmt: skip
        git(tmp_path, "config", key, value)
    assert git(tmp_path, "diff", "HEAD").startswith("external")  # the user's git would differ
    assert provenance.code_version(tmp_path)["diff_sha256"] == plain
    git(tmp_path, "checkout", "-q", "a.py")
    (tmp_path / "new_block.py").write_text("y = 1\n")  # a new module, not yet added
    first = provenance.code_version(tmp_path)
    assert first["dirty"] is True and first["diff_sha256"] not in (None, plain)
    (tmp_path / "new_block.py").write_text("y = 2\n")
    assert provenance.code_version(tmp_path)["diff_sha256"] != first["diff_sha256"]
    venv = tmp_path / ".venv" / "lib" / "site-packages"
    venv.mkdir(parents=True)
    assert provenance.code_version(venv)["commit"] is None


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
