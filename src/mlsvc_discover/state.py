"""The state file: delete bookkeeping (consecutive misses, scopes) kept across processes.

- Reading never fails: a file that cannot be read as the expected shape (any bytes, any JSON:
  ``1e999``, nesting thousands deep, wrong types) costs only delete progress, with a warning.
- Writing is atomic (temporary file, fsync, rename over the old one) and loud: a failure
  raises :class:`StateError` naming the path, which fails the cycle under ``sync``.
- One agent per file: a writer holds ``flock`` on ``<path>.lock`` beside it for its whole
  life; a second one gets :class:`StateLockedError` at once instead of racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlsvc_discover._errors import StateError, StateLockedError

__all__ = ["MAX_STATE_BYTES", "DeleteState", "StateFile"]

log = logging.getLogger(__name__)

# Miss counts and scopes of tens of thousands of services fit well under this.
MAX_STATE_BYTES = 64 * 1024 * 1024


@dataclass
class DeleteState:
    """What survives between cycles for safe deletes."""

    misses: dict[str, int] = field(default_factory=dict)
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)


class StateFile:
    """One state file and its lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock: IO[bytes] | None = None

    # --- reading -------------------------------------------------------------------------

    def load(self, owner: str) -> DeleteState:
        """The saved state of ``owner``; empty, with a warning, when it cannot be read."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return DeleteState()
        except OSError as exc:
            return self._fresh(f"cannot read it: {exc.strerror or exc}")
        if len(data) > MAX_STATE_BYTES:
            return self._fresh(f"it is larger than {MAX_STATE_BYTES} bytes")
        try:
            raw = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._fresh(f"not JSON: {type(exc).__name__}")
        try:
            return _parse(raw, owner, self.path)
        except _Unreadable as exc:
            return self._fresh(str(exc))

    def _fresh(self, why: str) -> DeleteState:
        # Only delete progress is lost: misses count again from zero, so nothing is deleted early.
        log.warning("state file %s is unreadable (%s); starting with no miss counts", self.path, why)
        return DeleteState()

    # --- writing -------------------------------------------------------------------------

    def save(self, owner: str, state: DeleteState) -> None:
        """Replace the file atomically; StateError naming the path when it cannot be written."""
        data = {
            "owner": owner,
            "misses": state.misses,
            "scopes": {k: list(v) for k, v in state.scopes.items()},
        }
        self._write(json.dumps(data, sort_keys=True).encode("utf-8"))

    def probe(self) -> None:
        """Check now that the state can be written (create its directory, write a temp file)."""
        self._write(None)

    def _write(self, payload: bytes | None) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise IsADirectoryError(21, "is a directory")
            with tmp.open("wb") as f:
                f.write(payload if payload is not None else b"{}")
                f.flush()
                os.fsync(f.fileno())
            if payload is None:
                tmp.unlink()
                return
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StateError(
                f"cannot write state file {self.path}: {exc.strerror or exc}; make its directory writable "
                "or change state.path (without it, sync cannot count misses and deletes nothing)",
                path=self.path,
            ) from exc

    # --- the lock ------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the writer's lock; StateLockedError when another agent holds it. Idempotent."""
        if self._lock is not None:
            return
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            f = self.lock_path.open("ab")
        except OSError as exc:
            raise StateError(
                f"cannot create the lock file {self.lock_path}: {exc.strerror or exc}; make the directory "
                "of state.path writable",
                path=self.path,
            ) from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            f.close()
            raise StateLockedError(
                f"another agent is using state file {self.path} (it holds {self.lock_path}); run one agent per "
                "state.path, or give each agent its own state.path and owner_id",
                path=self.path,
            ) from exc
        self._lock = f

    def unlock(self) -> None:
        f, self._lock = self._lock, None
        if f is not None:
            f.close()  # closing releases the flock

    @property
    def locked(self) -> bool:
        return self._lock is not None


class _Unreadable(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid miss count")


def _parse(raw: Any, owner: str, path: Path) -> DeleteState:
    if not isinstance(raw, dict):
        raise _Unreadable(f"expected a JSON object, got {type(raw).__name__}")
    if raw.get("owner") != owner:
        found = raw.get("owner")
        shown = found if isinstance(found, str) and len(found) <= 200 else type(found).__name__
        log.warning("state file %s belongs to %s, not %s; ignoring it", path, shown, owner)
        return DeleteState()
    misses_raw = raw.get("misses", {})
    scopes_raw = raw.get("scopes", {})
    if not isinstance(misses_raw, dict) or not isinstance(scopes_raw, dict):
        raise _Unreadable("misses and scopes must be JSON objects")
    misses: dict[str, int] = {}
    for k, v in misses_raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or v != int(v):
            raise _Unreadable(f"miss count of {k[:100]!r} is not a whole number")
        misses[k] = int(v)
    scopes: dict[str, tuple[str, ...]] = {}
    for k, v in scopes_raw.items():
        if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
            raise _Unreadable(f"scope of {k[:100]!r} is not a list of strings")
        scopes[k] = tuple(v)
    return DeleteState(misses, scopes)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
