"""Content hashes of the files results depend on (checkpoints, dataset files), cached by what no copy can forge.

A run's identity holds the sha256 of every file its models and data are read from, so results
belong to the bytes they were computed from: replace a checkpoint and the grid gets a new run and
new unit keys, instead of old rows shown as new or one unit mixing batches of two models.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path

CACHE_ENV = "HARNESS_CACHE"
MISSING = "missing"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "robustness-harness"))


def _cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, str]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        tmp.replace(path)  # atomic: a concurrent reader sees the old or the new cache, never half of one
    except OSError:
        pass  # a cache we cannot write only costs time


def file_sha256(path: Path, cache: dict[str, str] | None = None) -> str:
    """The file's sha256; reused from the cache while its resolved path, device, inode, size, mtime and ctime
    are all unchanged. ``cp -p``, ``tar`` and ``rsync -a`` restore a replaced file's size and mtime, but the
    kernel sets its ctime (and a new file gets a new inode), so a replacement is always hashed again."""
    stat = path.stat()
    tag = f"{path.resolve()}:{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    cache = _load_cache() if cache is None else cache
    if tag not in cache:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        cache[tag] = digest.hexdigest()
    return cache[tag]


def contents(paths: list[Path]) -> tuple[tuple[str, str], ...]:
    """(path, sha256) for each file; a file that does not exist (yet) is recorded as "missing"."""
    cache = _load_cache()
    size = len(cache)
    out = tuple((portable(p), file_sha256(p, cache) if p.is_file() else MISSING) for p in paths)
    if len(cache) != size:
        _save_cache(cache)
    return out


def portable(path: Path) -> str:
    """How a file is named in an identity: as the plugin gave it, except a file inside the installed packages
    (scikit-learn's digits) or the home folder (a download cache), named from there. The same data in another
    virtual environment, or under another user, is then the same run, and resumes."""
    resolved = path.expanduser().resolve() if path.is_absolute() else None
    if resolved is None:
        return str(path)
    for label, root in (("<site-packages>", sysconfig.get_paths()["purelib"]),
                        ("<site-packages>", sysconfig.get_paths()["platlib"]), ("~", str(Path.home()))):
        root_path = Path(root).resolve()
        if resolved.is_relative_to(root_path):
            return f"{label}/{resolved.relative_to(root_path).as_posix()}"
    return str(path)

