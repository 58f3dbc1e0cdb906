"""What every entry point shares: flag parsing that names a bad config, and one-line errors.

    cli.run(main)   # instead of absl's app.run(main)

- The config file is loaded and every `--config.KEY` checked before absl parses anything: a
  missing file, a syntax error, no `get_config()` or an unknown key (with the closest valid key)
  is one line naming it.
- `--config.<...>.kwargs.FIELD=VALUE` sets any model field, also one the config file does not
  list (Python literals; anything else is a string); `train.validate` checks it against the model.
- A failure in `main` (`CnnlabError`, the filesystem, anything unexpected) ends with one line
  `error: ...` on stderr and exit status 1. `--debug` (or CNNLAB_DEBUG=1) shows the traceback.
- A run stopped by SIGTERM or SIGINT (`cnnlab.train.preempt`) ends with one line saying where
  it stopped and how to resume, and exit status 143 or 130.
"""

import ast
import difflib
import errno
import importlib.util
import os
import re
import sys
from pathlib import Path

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from cnnlab.errors import CnnlabError, ConfigError

DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the Python traceback of a failure (also CNNLAB_DEBUG=1)."
)
_OVERRIDE = re.compile(r"^--?(no)?config\.([\w.]+)(?:=(.*))?$", re.DOTALL)


def _debugging(argv=()) -> bool:
    return os.environ.get("CNNLAB_DEBUG") == "1" or "--debug" in argv or bool(DEBUG.present)


def fail(message: str):
    """Print `error: message` as one line and exit with status 1."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(1)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`FILE` or `FILE:ARG` -> get_config([ARG]); every way this can fail is a ConfigError."""
    path, _, arg = spec.partition(":")
    where = f"--config={spec}"
    if not Path(path).is_file():
        raise ConfigError(
            f"{where}: no such file; pass a config file, e.g. experiments/configs/base.py"
        )
    try:
        loader = importlib.util.spec_from_file_location("cnnlab_cli_config", path)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{where}: syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        raise ConfigError(f"{where}: loading it raised {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(
            f"{where} defines no get_config(); a config file defines get_config() returning an "
            f"ml_collections.ConfigDict"
        )
    try:
        config = module.get_config(*([arg] if arg else []))
    except Exception as e:
        raise ConfigError(f"{where}: get_config() raised {type(e).__name__}: {e}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{where}: get_config() returned {type(config).__name__}, not an "
            f"ml_collections.ConfigDict"
        )
    return config


def keys(config, prefix: str = "") -> list[str]:
    """Every dotted key of a ConfigDict, sub-dicts included."""
    out = []
    for k, v in config.items():
        out.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            out += keys(v, f"{prefix}{k}.")
    return out


def unknown_key(config, key: str, what: str = "--config") -> ConfigError:
    """The error for a key the config does not have, with the closest keys it does have."""
    close = difflib.get_close_matches(key, keys(config), n=2, cutoff=0.7)
    parent = key.rpartition(".")[0]
    if close:
        hint = "did you mean " + " or ".join(f"{what}.{k}" for k in close) + "?"
    else:
        node = _node(config, parent) if parent else config
        names = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
        hint = f"keys of config{'.' + parent if parent else ''}: {names}"
    return ConfigError(f"{what}.{key}: the config has no such key; {hint}")


def _node(config, key: str):
    from cnnlab import dotted

    node, missing = dotted.walk(config, key)
    return None if missing is not None else node


def _literal(text: str | None, negated: bool):
    if text is None:
        return not negated  # --config.X / --noconfig.X
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string, as config_flags reads one


def _config_spec(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def check_overrides(config, argv) -> tuple[list[str], dict]:
    """-> (argv without new model fields, {dotted key: value} of those fields); an unknown key
    is a ConfigError."""
    rest, fields = [], {}
    for arg in argv:
        m = _OVERRIDE.match(arg)
        if not m:
            rest.append(arg)
            continue
        negated, key, text = m.groups()
        parent, _, leaf = key.rpartition(".")
        node = _node(config, parent)
        if isinstance(node, ml_collections.ConfigDict) and leaf in node:
            rest.append(arg)
        elif parent.endswith("kwargs") and isinstance(node, ml_collections.ConfigDict):
            fields[key] = _literal(text, bool(negated))  # a model field (validated later)
        else:
            raise unknown_key(config, key)
    return rest, fields


GIVEN: dict = {}  # every --config.KEY=VALUE of the command line, as parsed: {'KEY': value}


def given(prefix: str = "") -> dict:
    """The --config.KEY=VALUE overrides of this command line whose KEY starts with `prefix`."""
    return {k: v for k, v in GIVEN.items() if k.startswith(prefix)}


def parse_flags(argv, default_config: str | None = None):
    """absl's parser, preceded by the checks above; any failure is one line. `default_config`
    is used when argv has no --config (the flag itself has no default: config_flags would load
    a default at import, before any error could be reported)."""
    try:
        spec = _config_spec(argv)
        if spec is None and default_config:
            spec, argv = default_config, [argv[0], f"--config={default_config}", *argv[1:]]
        fields = {}
        for arg in argv:
            if m := _OVERRIDE.match(arg):
                GIVEN[m.group(2)] = _literal(m.group(3), bool(m.group(1)))
        if spec:
            argv, fields = check_overrides(load_config(spec), argv)
        sys.argv = list(argv)  # config_flags reads its overrides from sys.argv
        rest = flags.FLAGS(argv)
        if fields:
            _set_fields(flags.FLAGS["config"].value, fields)
        return rest
    except Exception as e:
        if _debugging(argv):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(message if isinstance(e, CnnlabError) else f"{message}; see --helpfull")


def _set_fields(config, fields: dict) -> None:
    """Model fields the config file does not list (check_overrides), set without type checks:
    `train.validate` checks them against the model."""
    for key, value in fields.items():
        parent, _, leaf = key.rpartition(".")
        node = _node(config, parent)
        with node.unlocked(), node.ignore_type():
            node[leaf] = value


def config_from_args(*args: str) -> ml_collections.ConfigDict:
    """The config an entry point runs with for these flags (`--config=FILE[:ARG]` first, then any
    `--config.KEY=VALUE`), read in this process by the same checks and `config_flags` parser as
    the command line: for notebooks and tests. Every failure is a ConfigError."""
    spec = _config_spec(args)
    if spec is None:
        raise ConfigError("pass --config=FILE first, e.g. --config=experiments/configs/base.py")
    argv, fields = check_overrides(load_config(spec), ["cnnlab", *args])
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
    try:
        values(argv)
    except flags.Error as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from None
    _set_fields(values["config"].value, fields)
    return values["config"].value


def accept_changes_flag(what: str):
    """`--accept_changes` of an entry point whose re-run resumes: `what` it then accepts."""
    return flags.DEFINE_bool("accept_changes", False, what)


def describe_os_error(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    advice = {
        errno.ENOSPC: "the disk is full; free space (the last complete checkpoint is kept) "
        "and re-run the same command to resume",
        errno.EROFS: "the filesystem is read-only; pass a writable --workdir",
        errno.EACCES: "permission denied; pass a --workdir you can write",
        errno.ENOTDIR: "a file stands where a directory should be; pass another --workdir",
        errno.EEXIST: "a file stands where a directory should be; pass another --workdir",
    }.get(e.errno, "check the path and the disk")
    return f"{e.strerror or e}{where}: {advice}"


def run(main, default_config: str | None = None) -> None:
    """absl's app.run with the parser above and one-line errors from `main`."""

    def guarded(argv):
        try:
            return main(argv)
        except SystemExit:
            raise
        except Exception as e:
            if type(e).__name__ == "Preempted":  # cnnlab.train.preempt, not imported up front
                print(" ".join(str(e).split()), file=sys.stderr)
                sys.exit(e.exit_code)  # 143 for SIGTERM, 130 for SIGINT, as a shell reports
            if _debugging():
                raise
            if isinstance(e, CnnlabError):
                fail(e)
            if isinstance(e, OSError):
                fail(describe_os_error(e))
            fail(f"unexpected {type(e).__name__}: {e} (a bug: re-run with --debug and report it)")

    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, default_config))
