"""A device's disk cache of LiteRT flatbuffers, by content key, so a restart or a plan switch
loads a slice from local storage instead of over the network.

An entry is one file, ``<content key>.<sha256 of its bytes>.tflite``: its name carries its own
checksum, a write is atomic (a temporary file in the same folder, then a rename), and an entry
whose bytes do not match its name is corrupt: it is deleted, counted, and reported missing, so
the client sends it again. Entries past ``mcdask.worker.cache-max-bytes`` are evicted, least
recently used first (a load touches its entry). The folder is ``mcdask.worker.cache-dir``, else
``mcdask-slices`` beside the worker's own scratch folder (Dask removes a worker's folder when it
stops; the folder beside it stays). Imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

SUFFIX = ".tflite"
_NAME = re.compile(r"^(?P<key>[0-9a-f]{16,64})\.(?P<sha>[0-9a-f]{64})\.tflite$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_dir(worker=None) -> Path:
    """``mcdask.worker.cache-dir``, else ``mcdask-slices`` in the folder that holds ``worker``'s
    scratch folder (Dask's ``dask-scratch-space``), else in the system's temp folder."""
    import dask.config

    configured = dask.config.get("mcdask.worker.cache-dir", None)
    if configured:
        return Path(configured).expanduser()
    local = getattr(worker, "local_directory", None)
    base = Path(local).parent if local else Path(tempfile.gettempdir())
    return base / "mcdask-slices"


def max_bytes(key: str = "mcdask.worker.cache-max-bytes") -> int | None:
    """The setting ``key`` in bytes, or None for no bound."""
    import dask.config
    import dask.utils

    value = dask.config.get(key, None)
    return None if value in (None, False) else int(dask.utils.parse_bytes(value))


class FlatCache:
    """Flatbuffers on this device's disk, by content key (see the module docstring)."""

    def __init__(self, folder: Path, limit_bytes: int | None = None):
        self.folder = Path(folder)
        self.limit_bytes = limit_bytes
        self.hits = self.stored = self.corrupt = self.evicted = 0
        self._verified: dict[Path, tuple[int, int]] = {}   # path -> (size, mtime_ns) whose checksum held
        self._receiving: dict[str, tuple] = {}   # key -> (SHA-256 so far, bytes so far) of a chunked put

    def _entries(self, key: str | None = None) -> list[Path]:
        if not self.folder.is_dir():
            return []
        pattern = f"{key}.*{SUFFIX}" if key else f"*{SUFFIX}"
        return [p for p in self.folder.glob(pattern) if _NAME.match(p.name)]

    def find(self, key: str) -> Path | None:
        """The entry of ``key`` whose bytes match its checksum, or None; a corrupt one is
        deleted and counted."""
        for path in self._entries(key):
            if self._intact(path):
                return path
            self.corrupt += 1
            self._verified.pop(path, None)
            path.unlink(missing_ok=True)
        return None

    def _intact(self, path: Path) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        if self._verified.get(path) == (st.st_size, st.st_mtime_ns):
            return True
        m = _NAME.match(path.name)
        if m is None or sha256_of(path) != m["sha"]:
            return False
        self._verified[path] = (st.st_size, st.st_mtime_ns)
        return True

    def missing(self, keys: list[str]) -> list[str]:
        """Those of ``keys`` this device holds no intact entry of."""
        return [k for k in keys if self.find(k) is None]

    def put(self, key: str, data: bytes) -> Path:
        """Write ``data`` as ``key``'s entry, atomically; then keep the cache within its bound."""
        _check_key(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._commit(key, Path(tmp), hashlib.sha256(data).hexdigest())

    def put_chunk(self, key: str, offset: int, data: bytes, total: int, sha256: str) -> Path | None:
        """Write ``data`` at ``offset`` of ``key``'s entry as it arrives: ``total`` bytes whose
        SHA-256 is ``sha256``, in order from offset 0 (which starts it afresh). Each chunk is
        synced and its pages dropped from the page cache, which a memory cgroup counts: a device
        takes a flatbuffer larger than its free memory. The last chunk checks the whole and
        makes it the entry (returned, as ``put``); until then None."""
        _check_key(key)
        part = self.folder / f".{key}.receiving"
        if offset == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            part.unlink(missing_ok=True)
            self._receiving[key] = (hashlib.sha256(), 0)
        digest, done = self._receiving.get(key, (None, -1))
        if digest is None or done != offset:
            raise ValueError(f"flatbuffer {key}: a chunk at byte {offset:,} came after {max(done, 0):,} bytes; "
                             "send it again from the start")
        with open(part, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), offset, len(data), os.POSIX_FADV_DONTNEED)
        digest.update(data)
        self._receiving[key] = (digest, offset + len(data))
        if offset + len(data) < total:
            return None
        del self._receiving[key]
        if offset + len(data) != total or digest.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise ValueError(f"flatbuffer {key}: {offset + len(data):,} bytes arrived of {total:,}, "
                             f"SHA-256 {digest.hexdigest()[:12]} against {sha256[:12]}; send it again")
        return self._commit(key, part, sha256)

    def _commit(self, key: str, written: Path, sha256: str) -> Path:
        """Rename the synced file ``written`` into ``key``'s entry; drop older entries of the key
        (other bytes); keep the cache within its bound."""
        path = self.folder / f"{key}.{sha256}{SUFFIX}"
        try:
            os.replace(written, path)
        except BaseException:
            written.unlink(missing_ok=True)
            raise
        for old in self._entries(key):
            if old != path:
                old.unlink(missing_ok=True)
        self.stored += 1
        self.evict(keep=path)
        return path

    def load(self, key: str) -> Path:
        """The intact entry of ``key`` (counted as a hit, its use time touched); KeyError if none."""
        path = self.find(key)
        if path is None:
            raise KeyError(key)
        os.utime(path)
        st = path.stat()
        self._verified[path] = (st.st_size, st.st_mtime_ns)
        self.hits += 1
        return path

    def evict(self, keep: Path | None = None) -> None:
        """Delete least recently used entries until the cache is within ``limit_bytes``."""
        if self.limit_bytes is None:
            return
        entries = sorted(self._entries(), key=lambda p: p.stat().st_mtime_ns)
        total = sum(p.stat().st_size for p in entries)
        for p in entries:
            if total <= self.limit_bytes:
                break
            if p == keep:
                continue
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            self._verified.pop(p, None)
            self.evicted += 1

    def status(self) -> dict:
        """What the worker reports: where, how much, and what happened."""
        entries = self._entries()
        return {"dir": str(self.folder), "entries": len(entries), "bytes": sum(p.stat().st_size for p in entries),
                "limit_bytes": self.limit_bytes, "hits": self.hits, "stored": self.stored,
                "corrupt": self.corrupt, "evicted": self.evicted}


def _check_key(key: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{16,64}", key):
        raise ValueError(f"content key {key!r}: expected 16 to 64 lowercase hex digits")


def entry_sha256(path: Path) -> str:
    """The SHA-256 an entry's name carries (the client's cache names its files so too)."""
    m = _NAME.match(path.name)
    return m["sha"] if m else sha256_of(path)


_OPEN: dict[Path, FlatCache] = {}


def opened(folder: Path, limit_bytes: int | None) -> FlatCache:
    """This process's cache of ``folder`` (one per folder, so its counts add up)."""
    if folder not in _OPEN:
        _OPEN[folder] = FlatCache(folder, limit_bytes)
    return _OPEN[folder]


def for_worker(worker=None) -> FlatCache:
    """The disk cache of ``worker``'s device (see ``default_dir``)."""
    return opened(default_dir(worker), max_bytes())


def statuses() -> list[dict]:
    """``FlatCache.status`` of each cache this process opened (a worker's status reports them)."""
    return [c.status() for c in _OPEN.values()]
