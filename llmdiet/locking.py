"""An exclusive lock on an output directory, so two runs never write into one.

``with directory_lock(out, "llmdiet eval"):`` takes an advisory ``flock`` on ``out/.llmdiet.lock``. The kernel
drops the lock when the holding process exits, so a killed run never leaves a stale lock behind; the file
records the holder's pid and command only to make the refusal message useful.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from llmdiet.config import ConfigError

LOCK_FILE = ".llmdiet.lock"
logger = logging.getLogger(__name__)


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str, wait: bool = False):
    """``wait``: block until the holder finishes (for shared caches that concurrent jobs build once) instead of
    refusing at once."""
    with file_lock(Path(directory) / LOCK_FILE, what, wait, shown=Path(directory)):
        yield


@contextlib.contextmanager
def file_lock(path: str | Path, what: str, wait: bool = False, shown: Path | None = None, remove: bool = False):
    """The same advisory lock on the file ``path`` (created, parents too), e.g. beside a directory that is replaced
    by a rename while the lock is held; ``shown`` is the path named in the refusal; ``remove``: delete the lock
    file when done (for locks beside a user's output, which should leave nothing behind; a run that starts in the
    instant between the removal and the release can miss the lock, an accepted race for a refuse-at-once lock)."""
    path = Path(path)
    directory = shown or path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"{directory}: cannot write there ({err.strerror}); choose a directory you can write to"
        ) from None
    locked = False
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run unguarded
            pass
        except OSError:
            holder = _holder(handle)
            if not wait:
                raise ConfigError(
                    f"{directory} is in use by a running {what} ({holder}); wait for it to finish, "
                    "or choose another output directory"
                ) from None
            # a shared cache: one line saying who builds it, then wait for it and reuse what it built
            logger.info("%s: waiting for %s (%s) to finish; its result is then reused", directory, what, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {' '.join(sys.argv[:6])}\n")
        handle.flush()
        locked = True
        yield
    finally:
        if remove and locked:
            path.unlink(missing_ok=True)
        handle.close()


def _holder(handle) -> str:
    """The holder's "pid N: command" line; it writes it right after taking the lock, so wait up to 1 s for it."""
    import time

    for _ in range(20):
        handle.seek(0)
        text = handle.read().strip()
        if text:
            return text
        time.sleep(0.05)
    return "another process"


def is_locked(directory: str | Path) -> bool:
    """Whether a running process holds ``directory``'s lock (without taking it for long)."""
    path = Path(directory) / LOCK_FILE
    if not path.is_file():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False
