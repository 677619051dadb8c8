"""Writer processes for tests/integration/test_gallery_writers.py (run as a script, not collected).

``python gallery_writer.py crash BASE``: for k = 1, 2, ... fork a child that sets up a gallery in
``BASE/k<k>``, then runs :data:`OPS` and SIGKILLs itself at the k-th storage step (before each
``write_bytes``/``write_if``/``delete`` call, before each rename of a fully written temporary file, and
before each acknowledgement), appending the index of every acknowledged operation to ``BASE/k<k>/acks``.
Stops at the first k the child survives (every step has then been a kill point); prints
``{"runs": k, "killed": n}``.

``python gallery_writer.py hammer URI WRITER CHANGES SEED START``: one of several writers on ``URI``: waits
for the file ``START``, then makes ``CHANGES`` random puts/deletes of a few shared ids, reloading and
retrying when refused; logs every committed version and every refused attempt as JSON lines on stdout.

Item payloads are derived from a tag (``embedding(tag)``, image bytes ``tag``), so the test can check the
stored content of every id against the log.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tvifm.data import storage
from tvifm.serve.gallery import (
    ConcurrentWriteError,
    CorruptGalleryError,
    GalleryError,
    PersistentGallery,
    Record,
    UnknownItemError,
)

DIM = 4
SETUP: list[tuple[Any, ...]] = [("add", [("a0", "visible", "a0@1"), ("a1", "ir", "a1@1")])]
OPS: list[tuple[Any, ...]] = [
    ("add", [("b0", "visible", "b0@1"), ("b1", "ir", "b1@1")]),  # new items with images
    ("add", [("a0", "visible", "a0@2")]),  # a replacement (3 segments: compacts after the commit)
    ("delete", "a1"),
    ("compact",),
    ("add", [("c0", "visible", "c0@1")]),
]


def embedding(tag: str) -> torch.Tensor:
    """The unit embedding of a payload tag."""
    seed = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)
    return F.normalize(torch.randn(1, DIM, generator=torch.Generator().manual_seed(seed)), dim=1)[0]


def expected(ops: list[tuple[Any, ...]]) -> dict[str, str]:
    """The content (id -> tag) after ``ops``."""
    state: dict[str, str] = {}
    for op in ops:
        if op[0] == "add":
            state.update({item: tag for item, _, tag in op[1]})
        elif op[0] == "delete":
            state.pop(op[1])
    return state


def run(gallery: PersistentGallery, op: tuple[Any, ...]) -> None:
    if op[0] == "add":
        records = [Record(item, modality, {"tag": tag}) for item, modality, tag in op[1]]
        emb = torch.stack([embedding(tag) for _, _, tag in op[1]])
        gallery.add(records, emb, images=[tag.encode() for _, _, tag in op[1]])
    elif op[0] == "delete":
        gallery.delete(op[1])
    else:
        gallery.compact()


def _kill_at(k: int) -> Any:
    """Patch the storage steps so that the k-th one SIGKILLs this process; returns the step function."""
    counter = itertools.count(1)

    def step() -> None:
        if next(counter) == k:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            step()
            return fn(*args, **kwargs)

        return wrapped

    for name in ("write_bytes", "write_if", "delete"):
        setattr(storage, name, wrap(getattr(storage, name)))
    os.replace = wrap(os.replace)  # a complete temporary file, not yet renamed
    return step


def crash_child(folder: Path, k: int) -> None:
    gallery = PersistentGallery(str(folder / "g"), DIM, "m", max_segments=2, orphan_grace_s=0)
    for op in SETUP:
        run(gallery, op)
    step = _kill_at(k)
    with open(folder / "acks", "a") as acks:
        for i, op in enumerate(OPS):
            run(gallery, op)
            step()
            acks.write(f"{i}\n")
            acks.flush()
            os.fsync(acks.fileno())


def crash(base: Path) -> None:
    for k in itertools.count(1):
        folder = base / f"k{k:03d}"
        folder.mkdir(parents=True)
        pid = os.fork()
        if pid == 0:
            try:
                crash_child(folder, k)
            except BaseException:
                os._exit(3)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            print(json.dumps({"runs": k, "killed": k - 1}))
            return
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise SystemExit(f"the writer of step {k} failed (status {status})")


def _log(entry: dict[str, Any]) -> None:
    print(json.dumps(entry), flush=True)


def _reload(gallery: PersistentGallery) -> None:
    for _ in range(20):
        try:
            gallery.refresh()
            return
        except CorruptGalleryError:
            raise
        except GalleryError:  # the other writer kept moving on while we loaded: try again
            time.sleep(0.01)
    raise SystemExit("could not reload the gallery")


def _change(gallery: PersistentGallery, op: str, item: str, tag: str) -> Any:
    if op == "put":
        return gallery.persist_add(
            [Record(item, "visible", {"tag": tag})], embedding(tag)[None], [tag.encode()]
        )
    return gallery.persist_delete([item])


def hammer(uri: str, writer: int, changes: int, seed: int, start: Path) -> None:
    gallery = PersistentGallery(uri, DIM, "m", max_segments=3)
    rng = random.Random(seed)
    while not start.exists():
        time.sleep(0.01)
    for j in range(changes):
        item, op = rng.choice(["p0", "p1", "p2", "p3"]), "delete" if rng.random() < 0.25 else "put"
        for attempt in itertools.count():
            tag = f"w{writer}-{j}-{attempt}"
            try:
                change = _change(gallery, op, item, tag)
            except ConcurrentWriteError:
                _log({"refused": tag})
                _reload(gallery)
                continue
            except UnknownItemError:
                break
            gallery.apply(change)
            gallery.collect_garbage(change)
            _log({"version": change.manifest["version"], "op": op, "id": item, "tag": tag})
            _compact(gallery)
            break


def _compact(gallery: PersistentGallery) -> None:
    if not gallery.needs_compaction():
        return
    try:
        change = gallery.persist_compaction()
    except ConcurrentWriteError:
        _reload(gallery)
        return
    gallery.apply(change)
    gallery.collect_garbage(change)
    _log({"version": change.manifest["version"], "op": "compact"})


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash(Path(sys.argv[2]))
    else:
        hammer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]))
