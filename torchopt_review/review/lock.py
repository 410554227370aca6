"""The experiment lock: ``runs/<experiment>/.lock`` (``fcntl.flock``).

A whole review holds ``.lock`` exclusively, so a second review of the same experiment exits 2
naming the holder's PID. A shard (``--shard i/n``) holds ``.lock`` shared plus
``.lock.shard<i>of<n>`` exclusively: shards do not exclude each other, but a whole-experiment
review started while shards run is refused (and the other way round), and each shard runs once.
Locks follow the local file system's semantics: on NFS, prefer ``--shard`` over racing reviews.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path

from ..errors import UserError


class ExperimentLock:
    """``runs/<exp>/.lock``: exclusive for a whole review, shared (+ an exclusive per-shard file) for shards."""

    def __init__(self, exp_dir: Path, shard: tuple[int, int] | None):
        self.exp_dir, self.shard = exp_dir, shard
        self.fds: list[int] = []

    def _pids(self, *names: str) -> list[str]:
        """The live PIDs written in the lock files matching ``names`` (for the refusal message)."""
        pids = []
        for name in names:
            for p in sorted(self.exp_dir.glob(name)):
                try:
                    pid = int(p.read_text().split()[0])
                    os.kill(pid, 0)
                except (OSError, ValueError, IndexError):
                    continue
                pids.append(str(pid))
        return sorted(set(pids), key=int)

    def _take(self, path: Path, exclusive: bool) -> int:
        """Lock ``path``; OSError only when another process holds it (an unwritable folder is a UserError)."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self.release()
            raise UserError(f"cannot write {path}: {exc.strerror or exc}; pass --logdir DIR somewhere writable") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise  # held by another process
            self.release()
            raise UserError(f"cannot lock {path}: {exc.strerror or exc} (a file system without locks?); "
                            "pass --logdir DIR on a local file system") from None
        self.fds.append(fd)
        return fd

    @staticmethod
    def _write_pid(fd: int) -> None:
        """The holder's PID, for the message a refused review prints (best effort: the lock is the flock)."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def acquire(self) -> "ExperimentLock":
        try:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.exp_dir}: {exc.strerror}; pass --logdir DIR somewhere writable") from None
        try:
            import fcntl  # noqa: F401
        except ImportError:  # Windows: no flock; the user keeps reviews apart
            print("warning: no file locking on this platform: do not run two reviews of one experiment at once", file=sys.stderr)
            return self
        exp = self.exp_dir.name
        try:
            fd = self._take(self.exp_dir / ".lock", exclusive=self.shard is None)
        except OSError:
            holders = self._pids(".lock", ".lock.shard*")
            who = f"PID {', '.join(holders)}" if holders else "another process"
            raise UserError(
                f"experiment {exp!r} is locked by another review ({who}, lock {self.exp_dir / '.lock'}); "
                f"wait for it to finish, or use --experiment NAME for a separate experiment"
            ) from None
        if self.shard is None:
            self._write_pid(fd)
            return self
        i, n = self.shard
        name = f".lock.shard{i}of{n}"
        try:
            self._write_pid(self._take(self.exp_dir / name, exclusive=True))
        except OSError:
            self.release()
            holders = self._pids(name)
            who = f"PID {', '.join(holders)}" if holders else "another process"
            raise UserError(f"shard {i}/{n} of experiment {exp!r} is already running ({who}); each shard runs once") from None
        return self

    def release(self) -> None:
        for fd in reversed(self.fds):
            try:
                os.close(fd)  # closing drops the flock
            except OSError:
                pass
        self.fds.clear()
