"""Disk cache of tokenised corpora: raw numpy arrays read back as read-only ``np.memmap``.

An entry is keyed by a SHA-256 over a JSON description of *what* was tokenised and *how* (tokenizer fingerprint,
text source, protocol, sequence length, format version), so a change to any of them is a miss, never a stale
hit. An entry ``<key>`` is the files ``<key>.<array>.bin`` (raw little-endian arrays) and ``<key>.json`` (dtype,
shape of each array, the key description, free-form info). Every file is written to a temporary name in the
same directory and moved into place with ``os.replace`` (atomic on POSIX), and the ``.json`` goes last: an
entry whose ``.json`` exists is complete, and a crash or a concurrent builder (e.g. several DDP ranks) can leave
at worst stray ``.tmp`` files, never a torn entry. Builders of the same entry serialise on ``<key>.lock``
(``fcntl.flock``), so an entry is built once even when several ranks ask for it at the same time.

Cache directory: the ``cache_dir`` argument, else ``$OEMDM_CACHE``, else ``~/.cache/oemdm_spec``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: Bump when the on-disk layout or any protocol's output changes, so old entries are never reused.
CACHE_FORMAT_VERSION = 2

#: Counts entries built (misses) and served (hits) in this process — tests use it to prove a cache hit.
STATS = {"built": 0, "hits": 0}


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir`` if given, else ``$OEMDM_CACHE`` if set and non-empty, else ``~/.cache/oemdm_spec``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("OEMDM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "oemdm_spec"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds ids ``< vocab_size``: uint16 up to 65536 ids, else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size={vocab_size} does not fit in uint32")


def cache_key(description: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``description`` (plus the format version)."""
    blob = json.dumps({"format": CACHE_FORMAT_VERSION, **description}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _atomic_replace(tmp: str, dst: Path) -> None:
    # mkstemp creates 0600 files; a cache may be shared between users, so publish entries as 0644.
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)


class ArrayWriter:
    """Streams named arrays to temporary files; :meth:`commit` moves them into place atomically."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory, self.key = directory, key
        self._files: dict[str, tuple[BinaryIO, str, np.dtype, tuple[int, ...], int]] = {}

    def open(self, name: str, dtype: np.dtype | type, row_shape: tuple[int, ...] = ()) -> None:
        """Declare array ``name`` with element ``dtype`` and per-row shape (``()`` for a 1-D stream)."""
        if not name.isidentifier() or name in self._files:
            raise ValueError(f"array name must be a new identifier, got name={name!r}")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.key}.{name}.", suffix=".tmp", dir=self.directory)
        self._files[name] = (os.fdopen(fd, "wb"), tmp, np.dtype(dtype).newbyteorder("<"), tuple(row_shape), 0)

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append rows (shape ``(n, *row_shape)``) to array ``name``; values are range-checked for the dtype."""
        f, tmp, dtype, row_shape, n = self._files[name]
        rows = np.asarray(rows)
        if rows.shape[1:] != row_shape:
            raise ValueError(f"{name}: rows of shape {rows.shape[1:]} appended to an array of rows {row_shape}")
        if rows.size and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            lo, hi = int(rows.min()), int(rows.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"{name}: values in [{lo}, {hi}] do not fit dtype {dtype}")
        f.write(np.ascontiguousarray(rows, dtype=dtype).tobytes())
        self._files[name] = (f, tmp, dtype, row_shape, n + rows.shape[0])

    def commit(self, description: dict[str, Any], info: dict[str, Any]) -> None:
        arrays = {}
        for name, (f, tmp, dtype, row_shape, n) in self._files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            _atomic_replace(tmp, self.directory / f"{self.key}.{name}.bin")
            arrays[name] = {"dtype": dtype.str, "shape": [n, *row_shape]}
        meta = {"format": CACHE_FORMAT_VERSION, "description": description, "arrays": arrays, "info": info}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.key}.", suffix=".json.tmp", dir=self.directory)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _atomic_replace(tmp, self.directory / f"{self.key}.json")
        self._files.clear()

    def abort(self) -> None:
        for f, tmp, *_ in self._files.values():
            f.close()
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._files.clear()


@contextlib.contextmanager
def entry_lock(directory: Path, key: str) -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``<directory>/<key>.lock`` (a no-op where ``fcntl`` does not exist).

    The lock file is left in place (deleting it would race with a waiter that already opened it); it is empty.
    """
    try:
        import fcntl  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / f"{key}.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def check_description(meta_path: Path, stored: Any, expected: dict[str, Any]) -> None:
    """Raise ``ValueError`` if an entry's stored description differs from the one asked for (e.g. a cache entry
    built with another tokenizer or tokenizer-library version, copied or renamed into place)."""
    if not isinstance(stored, dict) or stored == expected:
        return
    diff = {k: (stored.get(k), expected.get(k)) for k in sorted(set(stored) | set(expected))
            if stored.get(k) != expected.get(k)}
    what = ", ".join(f"{k}: cache has {a!r}, asked for {b!r}" for k, (a, b) in diff.items())
    raise ValueError(f"cache entry {meta_path} does not match the request ({what}); delete it or use another cache_dir")


def load_entry(
    directory: Path, key: str, expected: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Memmaps and info of a complete entry, or ``None`` if absent or inconsistent (then it is rebuilt).

    With ``expected`` (the description), an entry whose stored description differs raises ``ValueError``.
    """
    meta_path = directory / f"{key}.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if expected is not None:
        check_description(meta_path, meta.get("description"), json.loads(json.dumps(expected)))
    try:
        arrays: dict[str, np.ndarray] = {}
        for name, spec in meta["arrays"].items():
            path = directory / f"{key}.{name}.bin"
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            if path.stat().st_size != dtype.itemsize * int(np.prod(shape)):
                return None
            if int(np.prod(shape)) == 0:
                arrays[name] = np.zeros(shape, dtype=dtype)
            else:
                arrays[name] = random_access(np.memmap(path, dtype=dtype, mode="r", shape=shape))
        return arrays, meta["info"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_arrays(
    description: dict[str, Any],
    build: Callable[[ArrayWriter], dict[str, Any]],
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path]:
    """Return ``(arrays, info, meta_path)`` for ``description``, building them with ``build(writer)`` on a miss.

    ``build`` declares and fills arrays through the :class:`ArrayWriter` and returns a JSON-able ``info`` dict.
    """
    directory = resolve_cache_dir(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(description)
    hit = load_entry(directory, key, description)
    if hit is not None:
        STATS["hits"] += 1
        return hit[0], hit[1], directory / f"{key}.json"
    # Several processes (DDP ranks, parallel jobs) may miss at once: the first to take the lock builds, the
    # others wait on it and then find a complete entry.
    with entry_lock(directory, key):
        hit = load_entry(directory, key, description)
        if hit is not None:
            STATS["hits"] += 1
            return hit[0], hit[1], directory / f"{key}.json"
        writer = ArrayWriter(directory, key)
        try:
            info = build(writer)
            writer.commit(description, info)
        except BaseException:
            writer.abort()
            raise
        STATS["built"] += 1
    loaded = load_entry(directory, key)
    if loaded is None:  # pragma: no cover - only on a concurrent deletion
        raise OSError(f"cache entry {key} in {directory} vanished right after it was written")
    return loaded[0], loaded[1], directory / f"{key}.json"


def random_access(arr: np.memmap) -> np.memmap:
    """Tell the kernel the memmap is read at random rows (MADV_RANDOM): no readahead around each batch row, so
    the pages mapped into the process (its RSS) stay near the rows actually read instead of growing with the
    corpus. Where madvise is unavailable this is a no-op."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except (OSError, ValueError):
            pass
    return arr

