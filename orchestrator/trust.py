"""Which configuration files and import paths chordflow trusts.

``chordflow run`` started in a directory someone else controls must not run
their code. So the working directory is *not* trusted by default:

* ``CHORDFLOW_CONFIG_DIR`` (environment only) names a config directory you chose:
  its ``<env>.toml`` is read with every setting.
* ``CHORDFLOW_PROJECT_DIR`` (environment only) names a project you trust: its
  ``config/<env>.toml`` is read with every setting, and embedded workers get
  it on ``PYTHONPATH`` (so your own task packages there import).
* Otherwise ``./config/<env>.toml`` is read only if it, ``./config`` and ``.``
  are owned by you (or root) and writable by nobody else (your own private
  group, as with umask 002, counts as you), and it may not set
  the settings that decide what code is imported (``task_modules``,
  ``allowed_task_prefixes``) or accept an open Redis
  (``allow_unauthenticated_redis``) unless ``CHORDFLOW_TRUST_CWD_CONFIG=true``.
* Embedded workers never get the working directory on ``sys.path``.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ChordflowError

#: settings that widen what code chordflow imports, or who may drive it
TRUST_WIDENING = ("task_modules", "allowed_task_prefixes", "allow_unauthenticated_redis")
TRUTHY = ("1", "true", "yes", "on")


class ConfigUntrusted(ChordflowError):
    """A configuration file (or a setting in it) is not trusted; nothing was read."""


@dataclass(frozen=True)
class ConfigSource:
    """The config file to read and whether it may set :data:`TRUST_WIDENING` settings."""

    path: Path
    explicit: bool  #: named by CHORDFLOW_CONFIG_DIR / CHORDFLOW_PROJECT_DIR


def project_dir() -> Path | None:
    """The explicitly trusted project directory (``CHORDFLOW_PROJECT_DIR``), if any."""
    value = os.environ.get("CHORDFLOW_PROJECT_DIR")
    return Path(value).resolve() if value else None


def config_source() -> ConfigSource:
    env = os.environ.get("CHORDFLOW_ENV", "dev")
    explicit_dir = os.environ.get("CHORDFLOW_CONFIG_DIR")
    if explicit_dir:
        return ConfigSource(Path(explicit_dir) / f"{env}.toml", explicit=True)
    project = project_dir()
    if project is not None:
        return ConfigSource(project / "config" / f"{env}.toml", explicit=True)
    return ConfigSource(Path("config") / f"{env}.toml", explicit=False)


def check_cwd_config(path: Path, keys: set[str]) -> None:
    """Raise :class:`ConfigUntrusted` unless the working directory's config file may be used as is."""
    for p in (path, path.parent, Path(".")):
        problem = _not_private(p)
        if problem:
            raise ConfigUntrusted(
                f"refusing {path}: {problem}; a config file in the working directory must be owned by you "
                "and writable only by you (or set CHORDFLOW_CONFIG_DIR to a directory you trust)"
            )
    widening = sorted(keys & set(TRUST_WIDENING))
    if widening and os.environ.get("CHORDFLOW_TRUST_CWD_CONFIG", "").strip().lower() not in TRUTHY:
        raise ConfigUntrusted(
            f"refusing {path}: it sets {', '.join(widening)}, which decide what code chordflow imports "
            "or who may drive it; from the working directory that needs CHORDFLOW_TRUST_CWD_CONFIG=true "
            "(or CHORDFLOW_CONFIG_DIR / CHORDFLOW_PROJECT_DIR naming a directory you trust)"
        )


def _not_private(path: Path) -> str | None:
    """Why ``path`` could have been written by someone else, or None."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink"
    if st.st_uid not in (os.getuid(), 0):
        return f"{path} is owned by uid {st.st_uid}"
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid)):
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is the user's own private group (umask 002 systems): named like the user, no other members."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == os.getgid() and group.gr_name == user and set(group.gr_mem) <= {user}
