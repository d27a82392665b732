"""Logging: readable lines on stderr, optional rotating JSON lines in a file, no secret in either.

Every handler this module installs carries a `RedactingFilter`, which rewrites each record before
any formatter sees it: the message (with its args already substituted), the exception text, the
stack and string `extra` fields. It removes

* the literal values of known secrets: env ENGINE_TELEGRAM_TOKEN / ENGINE_WEBHOOK_SECRET /
  ENGINE_ADMIN_TOKEN and every env var whose name ends in _TOKEN, _SECRET, _KEY, _PASSWORD or
  _PASSPHRASE (read when logging is set up), plus anything a component hands to
  `register_secret` at run time (secrets read from `*_file` paths are registered that way);
* whatever looks like a secret even when nobody registered it: Telegram bot tokens (also inside
  `/bot<id>:<token>/` URLs), `apikey=` / `secret=` / `token=` / `signature=` / `password=`
  parameters, `Authorization:` headers and `Bearer` credentials, quoted `"api_key": "..."`
  pairs and `user:password@` in URLs.

Values shorter than `MIN_SECRET_LENGTH` are never treated as secrets: masking every "abc" in
every line would make the logs unreadable without protecting anything worth protecting.

The log file is opened with mode 0600 and rotated by size (`logging.handlers.RotatingFileHandler`),
keeping `backups` older files (`engine.log.1` … `engine.log.N`).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import orjson

from engine.redaction import REGISTRY, SecretRegistry, redact, redact_obj, register_env_secrets

if TYPE_CHECKING:
    from engine.config_sections import LoggingSection

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
CONSOLE_DATEFMT = "%H:%M:%S"
TEXT_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_DONE = "_engine_redacted"

# --- the filter ------------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=` (anything not a standard LogRecord attribute)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Rewrites each record in place so no handler after it can print a secret.

    The message is formatted here (args substituted, then cleared), the exception is rendered to
    `exc_text` and `exc_info` dropped, so a formatter cannot re-render the raw traceback.
    Attach it to handlers, not loggers: logger filters do not see records from child loggers.
    """

    def __init__(self, registry: SecretRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry or REGISTRY

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(_DONE):
            return True
        r = self.registry
        try:
            message = record.getMessage()
        except Exception:
            # A broken format string must not send the raw args to logging's error printer.
            message = f"{record.msg} (log arguments did not fit the format: {record.args!r})"
        record.msg = redact(message, r)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, r)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, r)
        for key, value in record_extras(record).items():
            if isinstance(value, str | Mapping | list | tuple):
                record.__dict__[key] = redact_obj(value, r)
        record.__dict__[_DONE] = True
        return True


_PLAIN = logging.Formatter()


# --- formatters and the file handler ---------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message, exc_info, stack_info,
    then every `extra` field (never overriding those)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")[:-6]
            + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record_extras(record).items():
            doc.setdefault(key, value)
        try:
            return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            # e.g. an int beyond 64 bits: orjson refuses it without asking `default`
            return orjson.dumps({k: v if isinstance(v, str) else repr(v) for k, v in doc.items()}).decode()


class UTCFormatter(logging.Formatter):
    """Plain text with full ISO dates in UTC, for a log file read later or elsewhere."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A RotatingFileHandler whose files are created (and kept) with mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            # umask can only remove bits, and an existing file keeps its mode: make it exactly 0600
            os.fchmod(fd, _FILE_MODE)
        except OSError:
            os.close(fd)
            raise
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


# --- set-up -------------------------------------------------------------------------------------------


@dataclass
class _Installed:
    handlers: list[logging.Handler] = field(default_factory=list)
    hooks: tuple[Any, Any] | None = None
    root_level: int | None = None


_installed = _Installed()


@dataclass(frozen=True, slots=True)
class FileLogSettings:
    """Where and how to write the log file (mirrors the `[logging]` config section)."""

    path: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS
    json: bool = True
    level: str | None = None


def file_settings(section: LoggingSection | None) -> FileLogSettings | None:
    """The file part of a `[logging]` section, or None when no file is configured."""
    if section is None or not section.file:
        return None
    from engine.config import resolve_path

    return FileLogSettings(
        resolve_path(section.file), section.max_bytes, section.backups, section.json_lines, section.level
    )


def _level(name: str | None, default: int = logging.INFO) -> int:
    if name is None:
        return default
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else default


def _tighten_existing(path: Path, backups: int) -> list[str]:
    repaired: list[str] = []
    for p in [path, *(Path(f"{path}.{i}") for i in range(1, backups + 1))]:
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and mode & 0o077:
            os.chmod(p, _FILE_MODE)
            repaired.append(f"{p}: {mode:04o} -> {_FILE_MODE:04o}")
    return repaired


def file_handler(settings: FileLogSettings) -> tuple[logging.Handler, list[str]]:
    """The rotating file handler (formatter and redaction attached) and which modes it tightened.

    Raises OSError when the file cannot be created or opened.
    """
    settings.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    repaired = _tighten_existing(settings.path, settings.backups)
    handler = PrivateRotatingFileHandler(
        settings.path, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter() if settings.json else UTCFormatter(TEXT_FILE_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler, repaired


def console_handler(stream: IO[str] | None = None) -> logging.Handler:
    """Readable `HH:MM:SS LEVEL logger: message` lines on stderr (or `stream`), redacted."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt=CONSOLE_DATEFMT))
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(
    level: str = "INFO",
    file: FileLogSettings | None = None,
    *,
    stream: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
    hooks: bool = True,
) -> list[logging.Handler]:
    """Replace the root logger's handlers with a redacting console handler (and file handler).

    `level` is the console level; the file uses `file.level`, defaulting to the same. Secret env
    vars are registered for masking first. With `hooks`, uncaught exceptions (main thread and
    other threads) and `warnings` are routed through logging so they are redacted too.
    Idempotent: calling it again (a reload) swaps the handlers it installed before.
    Raises OSError when the log file cannot be opened; the previous handlers are then kept.
    """
    register_env_secrets(env)
    console_level = _level(level)
    new: list[logging.Handler] = []
    repaired: list[str] = []
    if file is not None:
        fh, repaired = file_handler(file)
        fh.setLevel(_level(file.level, console_level))
        new.append(fh)
    ch = console_handler(stream)
    ch.setLevel(console_level)
    new.insert(0, ch)

    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if h in _installed.handlers:
            h.close()
    for h in new:
        root.addHandler(h)
    if _installed.root_level is None:
        _installed.root_level = root.level
    root.setLevel(min(h.level for h in new))
    _installed.handlers = new
    # ccxt and aiohttp are chatty at INFO/DEBUG about things the engine reports itself
    logging.getLogger("ccxt").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if hooks:
        _install_hooks()
    log = logging.getLogger("engine.logs")
    for what in repaired:
        log.warning("log file was readable by group/others; tightened %s", what)
    return new


def teardown_logging() -> None:
    """Remove what `setup_logging` installed and restore the exception hooks (tests)."""
    root = logging.getLogger()
    for h in _installed.handlers:
        root.removeHandler(h)
        h.close()
    _installed.handlers = []
    if _installed.root_level is not None:
        root.setLevel(_installed.root_level)
        _installed.root_level = None
    if _installed.hooks is not None:
        sys.excepthook, threading.excepthook = _installed.hooks
        _installed.hooks = None
        logging.captureWarnings(False)


def _install_hooks() -> None:
    if _installed.hooks is None:
        _installed.hooks = (sys.excepthook, threading.excepthook)
    logging.captureWarnings(True)
    crash = logging.getLogger("engine.crash")

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        crash.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        name = args.thread.name if args.thread is not None else "?"
        crash.critical(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = excepthook
    threading.excepthook = thread_hook


def installed_handlers() -> list[logging.Handler]:
    """The handlers the last `setup_logging` installed (empty before, or after teardown)."""
    return list(_installed.handlers)


def attach_redaction(handlers: Iterable[logging.Handler]) -> None:
    """Add a RedactingFilter to handlers this module did not create (e.g. a library's)."""
    for h in handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
