"""Where secrets come from, and keeping what the engine writes private.

Secrets come only from the environment or from a `*_file` path named in the config, and such a
file must not be accessible to group or others (chmod 600): a secret anyone on the host can read
is no secret, so a looser file is refused, not used. Every secret read here is registered with
`engine.redaction` so it is masked in every log line from then on. Error messages never contain the
secret itself.

The state directory holds the journal, the dead letters and the snapshot: `check_state_permissions`
tightens a directory or file that group or others can reach (0700 / 0600) and refuses to start
when it cannot.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ConfigError, ConfigProblem, StateError
from engine.redaction import register_secret

if TYPE_CHECKING:
    from engine.config import EngineSettings

ADMIN_TOKEN_ENV = "ENGINE_ADMIN_TOKEN"
MIN_ADMIN_TOKEN_LENGTH = 16
_DIR_MODE = 0o700
_FILE_MODE = 0o600

log = logging.getLogger("engine.secret_files")


def read_secret_file(path: Path, where: str, problems: list[ConfigProblem]) -> str | None:
    """The stripped contents of a chmod-600 regular file; a problem is recorded otherwise."""
    try:
        st = path.stat()
    except OSError as exc:
        problems.append(ConfigProblem(str(path), where, f"cannot read secret file: {exc.strerror}"))
        return None
    if not stat.S_ISREG(st.st_mode):
        problems.append(ConfigProblem(str(path), where, "secret file is not a regular file"))
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        problems.append(
            ConfigProblem(
                str(path),
                where,
                f"secret file has mode {mode:04o}; it must not be readable by group or others (chmod 600)",
            )
        )
        return None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(str(path), where, f"cannot read secret file: {exc}"))
        return None
    if not value:
        problems.append(ConfigProblem(str(path), where, "secret file is empty"))
        return None
    return value


def read_secret(
    env_name: str,
    file_value: str | None,
    section: str,
    file_key: str,
    problems: list[ConfigProblem],
    env: Mapping[str, str],
    *,
    required: bool = True,
) -> str | None:
    """The secret from env `env_name`, else from the file `file_value` (relative to the cwd).

    A problem is recorded when the file is unusable, or when neither is set and `required`.
    The value found is registered for log redaction. Messages never include the secret itself.
    """
    from engine.config import resolve_path

    value: str | None = env.get(env_name, "").strip()
    if not value:
        value = None
        if file_value:
            value = read_secret_file(resolve_path(file_value), f"{section}.{file_key}", problems)
        elif required:
            problems.append(
                ConfigProblem(
                    f"env {env_name}",
                    section,
                    f"required when {section}.enabled (or set {section}.{file_key} to a chmod 600 file)",
                )
            )
    if value is not None:
        register_secret(value)
    return value


def read_admin_token(
    settings: EngineSettings, env: Mapping[str, str] | None = None
) -> tuple[str | None, list[ConfigProblem]]:
    """The admin bearer token (env ENGINE_ADMIN_TOKEN, else `server.admin_token_file`), or None.

    No token is not a problem (the admin endpoints are then simply absent); an unusable file,
    a token shorter than MIN_ADMIN_TOKEN_LENGTH or one containing whitespace is.
    """
    problems: list[ConfigProblem] = []
    env = os.environ if env is None else env
    token = read_secret(
        ADMIN_TOKEN_ENV,
        settings.server.admin_token_file,
        "server",
        "admin_token_file",
        problems,
        env,
        required=False,
    )
    if token is None:
        return None, problems
    source = f"env {ADMIN_TOKEN_ENV}" if env.get(ADMIN_TOKEN_ENV, "").strip() else "server.admin_token_file"
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        problems.append(
            ConfigProblem(
                source, "server", f"admin token too short (at least {MIN_ADMIN_TOKEN_LENGTH} characters)"
            )
        )
        return None, problems
    if any(ch.isspace() for ch in token):
        problems.append(ConfigProblem(source, "server", "admin token contains whitespace"))
        return None, problems
    return token, problems


def admin_token(settings: EngineSettings, env: Mapping[str, str] | None = None) -> str | None:
    """`read_admin_token` for start-up: the token or None, raising ConfigError on any problem."""
    token, problems = read_admin_token(settings, env)
    if problems:
        raise ConfigError(problems)
    return token


def check_admin_token(settings: EngineSettings, env: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """What `admin_token` would refuse, for `engine check`."""
    return read_admin_token(settings, env)[1]


def check_state_permissions(path: Path, *, logger: logging.Logger | None = None) -> list[str]:
    """Tighten a state directory tree that group or others can reach; returns what was repaired.

    Directories become 0700 and regular files 0600, each repair logged as a warning. Symlinks are
    neither followed nor changed. A missing directory is fine (it is created 0700 later). Raises
    StateError when `path` is not a directory or an entry cannot be tightened (e.g. another
    user owns it): the engine refuses to start rather than run on an exposed state dir.
    """
    lg = logger or log
    path = Path(path)
    try:
        root = path.lstat()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"cannot inspect state dir {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(root.st_mode):
        raise StateError(f"state dir {path} is not a directory")
    repaired: list[str] = []

    def tighten(p: Path, st: os.stat_result, want: int, what: str) -> None:
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            return
        try:
            os.chmod(p, want)
        except OSError as exc:
            raise StateError(
                f"{what} {p} is accessible to group/others (mode {mode:04o}) and cannot be "
                f"tightened: {exc.strerror}; fix its permissions or use another state dir"
            ) from exc
        lg.warning("%s %s was accessible to group/others (mode %04o); tightened to %04o", what, p, mode, want)
        repaired.append(f"{p}: {mode:04o} -> {want:04o}")

    tighten(path, root, _DIR_MODE, "state dir")

    def walk_error(exc: OSError) -> None:
        raise StateError(f"cannot inspect state dir {path}: {exc}") from exc

    for dirpath, dirnames, filenames in os.walk(path, onerror=walk_error):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            p = here / name
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue  # removed meanwhile (a temp file)
            except OSError as exc:
                raise StateError(f"cannot inspect {p}: {exc.strerror}") from exc
            if stat.S_ISDIR(st.st_mode):
                tighten(p, st, _DIR_MODE, "state dir")
            elif stat.S_ISREG(st.st_mode):
                tighten(p, st, _FILE_MODE, "state file")
    return repaired
