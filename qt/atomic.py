"""Atomic file writes: the one temp-file scheme every writer in the project uses.

Why: reports, manifests, lake partitions, feature partitions and handover files are read by
other processes (the dashboard, the serving process, DVC, a resumed collector) while they are
being rewritten; a reader must see the old file or the new one, never half of one, and a kill
must leave the target intact. One scheme for all of them:

* the temp file is ``.<name>.<pid>.<thread id>.tmp`` in the target's own directory (``tmp_path``),
  so the rename never crosses a filesystem and a cleaner can tell a dead writer's leftovers
  (``data.partitions.remove_orphan_temp_files`` parses the pid);
* its bytes are flushed and fsynced, then ``os.replace`` puts it over the target;
* the temp file is removed when anything fails.

Writers that produce the file through a library (pyarrow, pandas) write to ``tmp_path(path)``
themselves and finish with ``replace_atomic(tmp, path)``. Ground floor: no project imports.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path


def tmp_path(path: Path | str) -> Path:
    """The temp name a writer of ``path`` uses: ``.<name>.<pid>.<thread id>.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(tmp: Path | str, path: Path | str) -> None:
    """Fsync the finished temp file ``tmp`` and rename it over ``path`` (removed when that fails)."""
    try:
        _fsync(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, obj, **dumps_kwargs) -> Path:
    """Replace ``path`` with ``json.dumps(obj, **dumps_kwargs)`` atomically; returns the path.

    The caller chooses the formatting (``indent``, ``default``, ``sort_keys`` ...), so every
    report keeps the exact bytes it had before."""
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))


def jsonable(obj):
    """NaN/inf -> None (strict JSON: an undefined metric, e.g. AUC of a one-class fold, is null)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
