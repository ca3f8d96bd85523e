"""One process at a time writes a run: ``PARENT/.NAME.lock`` is held with ``flock`` for the whole fit
(`RunLock`). A second process exits naming the holder; a lock left by a dead process (``kill -9``)
is taken over with a note (the kernel releases ``flock`` locks of dead processes).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from dsrecon.errors import DsreconError
from dsrecon.io.run_dir import lock_path

class RunLock:
    """An exclusive ``flock`` on PARENT/.NAME.lock; the file names the holder (pid, host, command)."""

    def __init__(self, target: Path, log: Callable[[str], None] | None = None):
        self.target = Path(target)
        self.path = lock_path(target)
        self.log = log or (lambda s: None)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DsreconError(f"{self.target}: cannot create {self.path.parent} ({e.strerror or e})") from None
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise DsreconError(f"{self.path}: cannot write the lock of {self.target} ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _read_holder(fd)
                os.close(fd)
                raise DsreconError(f"{self.target}: another dsrecon process is writing this run ({holder}); "
                                   "wait for it to finish or choose another -o") from None
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if not _is_our_lock(fd):  # a file of that name that dsrecon did not write: never overwrite it
                os.close(fd)
                raise DsreconError(f"{self.path}: exists and was not written by dsrecon (it is where dsrecon keeps the "
                                   f"lock of {self.target.name}); move it away")
            old = _read_holder(fd, raw=True)
            if old:
                self.log(f"note: took over the lock of {self.target} left by a process that is no longer running ({old})")
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                     "command": " ".join(["dsrecon", *sys.argv[1:]])}).encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise DsreconError(f"{self.target}: could not take the lock {self.path}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:  # gone, or a directory that became read-only: the flock ends with the descriptor
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_our_lock(fd: int) -> bool:
    """The locked file is empty (just created) or holds a dsrecon holder record ({"pid": …})."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return False
    if not text:
        return True
    try:
        h = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(h, dict) and "pid" in h


def _read_holder(fd: int, raw: bool = False) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return ""
    if not text:
        return "" if raw else "process unknown"
    try:
        h = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"process {h.get('pid')} on {h.get('host')}, since {when}"


