"""One storage API for local paths and ``s3://bucket/key`` object storage.

Every function takes a *URI*: a local path (``data/synthtri``, ``/abs/x.jpg``) or ``s3://bucket/key``.
S3 goes through boto3 (imported on first use); the endpoint comes from the ``endpoint`` argument, else
the ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` environment variable, else AWS itself; credentials
and region come from the usual AWS environment variables / config files. For Parquet,
:func:`arrow_filesystem` gives the matching :mod:`pyarrow.fs` filesystem (``S3FileSystem`` with
``endpoint_override`` for S3).

Writes are atomic: a local file is written to a temporary sibling and renamed over the target; an S3
object appears whole when its PUT completes. A reader therefore never sees a half-written file.
:func:`write_if` is a compare-and-swap on one file (a lock-guarded rename locally, a conditional PUT on
S3): it replaces the file only when it still holds the version the writer read (:func:`read_versioned`).

Names follow the issue's API (``open``, ``list``, ...) and deliberately shadow the builtins inside this
module only; import the module (``from tvifm.data import storage``) and call ``storage.list(uri)``.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import hashlib
import io
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from tvifm.errors import TvifmError

if TYPE_CHECKING:
    import pyarrow.fs

S3_SCHEME = "s3://"
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(TvifmError):
    """A storage URI is malformed, missing or cannot be read or written."""


@dataclass(frozen=True)
class S3Location:
    """The bucket and key of an ``s3://bucket/key`` URI."""

    bucket: str
    key: str


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith(S3_SCHEME)


def parse_s3(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` into bucket and key; raise :class:`StorageError` on a malformed URI."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name; expected s3://bucket/key")
    return S3Location(bucket, key)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path segments to ``base`` with ``/`` (S3) or the OS separator (local)."""
    if is_s3(base):
        out = str(base).rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}" if part else out
        return out
    return str(Path(base).joinpath(*parts))


def endpoint_url(endpoint: str | None = None) -> str | None:
    """The S3 endpoint to use: ``endpoint`` if given, else the first of the endpoint env variables set."""
    if endpoint:
        return endpoint
    return next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None) -> Any:
    import boto3  # edge dependency: only S3 users need it

    return boto3.session.Session().client("s3", endpoint_url=endpoint)


def s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client for ``endpoint`` (see :func:`endpoint_url`), cached per endpoint."""
    return _client(endpoint_url(endpoint))


def exists(uri: str | os.PathLike[str], endpoint: str | None = None) -> bool:
    """True when a file (local) or object (S3) exists at ``uri``."""
    if not is_s3(uri):
        return Path(uri).exists()
    loc = parse_s3(str(uri))
    try:
        s3_client(endpoint).head_object(Bucket=loc.bucket, Key=loc.key)
    except Exception as err:
        if _is_not_found(err):
            return False
        raise StorageError(f"cannot check {uri}: {err}") from err
    return True


def read_bytes(uri: str | os.PathLike[str], endpoint: str | None = None) -> bytes:
    """The whole content of ``uri``; a missing file raises :class:`StorageError` naming it."""
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as err:
            raise StorageError(f"{uri}: no such file") from err
        except OSError as err:
            raise StorageError(f"{uri}: cannot read: {err}") from err
    loc = parse_s3(str(uri))
    try:
        return s3_client(endpoint).get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
    except Exception as err:
        reason = "no such object" if _is_not_found(err) else str(err)
        raise StorageError(f"{uri}: {reason}") from err


def write_bytes(uri: str | os.PathLike[str], data: bytes, endpoint: str | None = None) -> None:
    """Write ``data`` to ``uri`` atomically, creating local parent folders as needed."""
    if is_s3(uri):
        loc = parse_s3(str(uri))
        try:
            s3_client(endpoint).put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        except Exception as err:
            raise StorageError(f"{uri}: cannot write: {err}") from err
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def delete(uri: str | os.PathLike[str], endpoint: str | None = None) -> None:
    """Remove the file or object at ``uri`` (no error when it does not exist)."""
    if is_s3(uri):
        loc = parse_s3(str(uri))
        s3_client(endpoint).delete_object(Bucket=loc.bucket, Key=loc.key)
    else:
        Path(uri).unlink(missing_ok=True)


# --- conditional writes and housekeeping ----------------------------------------------------------------
class WriteConflictError(StorageError):
    """A conditional write found another version of its target than the one the writer expected."""


@dataclass(frozen=True)
class Versioned:
    """A file's content and its version tag: the ETag on S3, the SHA-256 of the content locally."""

    data: bytes
    tag: str


@dataclass(frozen=True)
class FileEntry:
    """A listed file: its URI, size in bytes and modification time (POSIX seconds)."""

    uri: str
    size: int
    modified: float


def read_versioned(uri: str | os.PathLike[str], endpoint: str | None = None) -> Versioned | None:
    """The content of ``uri`` with its version tag for :func:`write_if`; None when it does not exist."""
    if not is_s3(uri):
        try:
            data = Path(uri).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(f"{uri}: cannot read: {err}") from err
        return Versioned(data, hashlib.sha256(data).hexdigest())
    loc = parse_s3(str(uri))
    try:
        response = s3_client(endpoint).get_object(Bucket=loc.bucket, Key=loc.key)
        return Versioned(response["Body"].read(), str(response["ETag"]))
    except Exception as err:
        if _is_not_found(err):
            return None
        raise StorageError(f"{uri}: {err}") from err


def write_if(
    uri: str | os.PathLike[str], data: bytes, expected: str | None, endpoint: str | None = None
) -> str:
    """Replace ``uri`` by ``data`` only if it still has the version tag ``expected`` (``None``: only if it
    does not exist), as one atomic step; returns the new tag.

    Raises :class:`WriteConflictError` (and changes nothing) when another writer got there first. Locally
    the data goes to a temporary sibling, then an exclusive ``flock`` on ``.<name>.lock`` beside the file
    guards the compare and the rename, so of two processes only one can win. On S3 it is one conditional
    PUT (``If-Match: <ETag>``, or ``If-None-Match: *`` for a new object) that the server evaluates
    atomically; the store must enforce these headers (see :func:`check_conditional_writes`).
    """
    if is_s3(uri):
        return _s3_write_if(str(uri), data, expected, endpoint)
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_copy(target, data)
    try:
        with _locked(target):
            current = read_versioned(target)
            if (current.tag if current else None) != expected:
                raise WriteConflictError(f"{uri} was changed by another writer")
            os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return hashlib.sha256(data).hexdigest()


def _temporary_copy(target: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``.<name>.lock`` beside ``target`` (released by the kernel if we die)."""
    fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _s3_write_if(uri: str, data: bytes, expected: str | None, endpoint: str | None) -> str:
    loc = parse_s3(uri)
    condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
    try:
        response = s3_client(endpoint).put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **condition)
    except Exception as err:
        if _error_code(err) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409") or (
            expected is not None and _is_not_found(err)
        ):
            raise WriteConflictError(f"{uri} was changed by another writer") from err
        raise StorageError(f"{uri}: cannot write: {err}") from err
    return str(response["ETag"])


def check_conditional_writes(folder: str, endpoint: str | None = None) -> None:
    """Raise :class:`StorageError` when the object store under ``folder`` ignores conditional PUTs.

    Two ``If-None-Match: *`` PUTs of a fresh probe object (``.conditional-probe-<uuid>``, deleted after):
    the second must be refused. A store that accepts it would let :func:`write_if` overwrite another
    writer's change. Local folders always qualify (the check is a no-op there).
    """
    if not is_s3(folder):
        return
    probe = join(folder, f".conditional-probe-{uuid.uuid4().hex}")
    try:
        write_if(probe, b"1", None, endpoint)
        write_if(probe, b"2", None, endpoint)
    except WriteConflictError:
        return
    finally:
        with contextlib.suppress(Exception):
            delete(probe, endpoint)
    raise StorageError(
        f"the object store of {folder} ignores conditional writes (If-None-Match/If-Match); "
        "concurrent writers could overwrite each other's changes. Use a store that enforces them "
        "(AWS S3, MinIO)"
    )


def list_entries(uri: str | os.PathLike[str], endpoint: str | None = None) -> builtins.list[FileEntry]:
    """Every file below the folder ``uri`` with size and modification time, sorted by URI.

    Unlike :func:`list_files`, dot-hidden files are included (housekeeping must see the temporary files
    of interrupted writes); a missing folder lists as empty.
    """
    if is_s3(uri):
        return sorted(_s3_entries(str(uri), endpoint), key=lambda e: e.uri)
    out = []
    for dirpath, _, filenames in os.walk(uri):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):  # deleted while we listed
                st = os.stat(path)
                out.append(FileEntry(path, st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: e.uri)


def _s3_entries(uri: str, endpoint: str | None) -> Iterator[FileEntry]:
    loc = parse_s3(uri)
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                modified = obj["LastModified"].timestamp() if "LastModified" in obj else time.time()
                yield FileEntry(f"{S3_SCHEME}{loc.bucket}/{obj['Key']}", int(obj.get("Size", -1)), modified)
    except Exception as err:
        raise StorageError(f"cannot list {uri}: {err}") from err


def remove_empty_folders(uri: str | os.PathLike[str]) -> None:
    """Remove the local folder ``uri`` and the folders below it that are (then) empty; folders holding
    files stay. S3 has no folders: a no-op there."""
    if is_s3(uri) or not os.path.isdir(uri):
        return
    for dirpath, _, _ in sorted(os.walk(uri), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):  # not empty, or gone
            os.rmdir(dirpath)


def list_files(
    uri: str | os.PathLike[str], suffix: str | tuple[str, ...] = "", endpoint: str | None = None
) -> builtins.list[str]:
    """Every file below the folder (or S3 prefix) ``uri``, recursively, as sorted URIs.

    Dot-hidden files and folders (temporary files of atomic writes) are left out. ``suffix`` keeps only
    names ending with it (case-insensitive). A missing folder lists as empty.
    """
    wanted = tuple(s.lower() for s in ((suffix,) if isinstance(suffix, str) else suffix))
    found = _list_s3(str(uri), endpoint) if is_s3(uri) else _list_local(Path(uri))
    return sorted(u for u in found if not wanted or u.lower().endswith(wanted))


def _list_local(folder: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def _list_s3(uri: str, endpoint: str | None) -> Iterator[str]:
    for item, _ in _list_s3_sized(uri, endpoint):
        yield item


def _list_s3_sized(uri: str, endpoint: str | None) -> Iterator[tuple[str, int]]:
    for rel, item, size in _s3_objects(uri, endpoint):
        if not _hidden(rel):
            yield item, size


def _s3_objects(uri: str, endpoint: str | None) -> Iterator[tuple[str, str, int]]:
    """(key relative to the prefix, object URI, size) of every object below ``uri``, hidden ones too."""
    loc = parse_s3(uri)
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                yield rel, f"{S3_SCHEME}{loc.bucket}/{obj['Key']}", int(obj.get("Size", -1))
    except Exception as err:
        raise StorageError(f"cannot list {uri}: {err}") from err


def _hidden(rel: str) -> bool:
    """True for dot-hidden files and files in dot-hidden folders (temporary files of atomic writes)."""
    return any(part.startswith(".") for part in rel.split("/"))


def _unsafe_reason(rel: str) -> str | None:
    """Why ``rel`` is no plain relative path of names (None when it is one)."""
    if not rel:
        return "it is empty"
    if "\x00" in rel:
        return "it contains a NUL character"
    if "\\" in rel:
        return "it contains a backslash"
    if rel.startswith("/"):
        return "it is absolute (starts with '/')"
    parts = rel.split("/")
    if "" in parts:
        return "it has an empty segment ('//' or a trailing '/')"
    if any(part in (".", "..") for part in parts):
        return "it has a '.' or '..' segment"
    return None


def local_path(folder: str | os.PathLike[str], rel: str, source: str | None = None) -> Path:
    """The local path of the relative name ``rel`` (an object key below a prefix, ``/``-separated) inside
    ``folder``; raises :class:`StorageError` naming ``rel`` unless it stays inside ``folder``.

    Refused: an empty name, NUL, backslashes, an absolute name, empty segments (``a//b``), ``.`` and
    ``..`` segments, and a name that leads out of ``folder`` through a symbolic link already there.
    Nothing is created. ``source`` (e.g. the object's URI) is named in the error too.
    """
    reason = _unsafe_reason(rel)
    base = Path(folder)
    target = base.joinpath(*rel.split("/")) if reason is None else base
    if reason is None and not target.resolve().is_relative_to(base.resolve()):
        reason = "it leads outside the folder through a symbolic link"
    if reason is not None:
        what = f"{source!r} (name {rel!r} in {folder})" if source else f"the name {rel!r} in {folder}"
        raise StorageError(
            f"refusing {what}: {reason}; only plain relative names map to local files "
            "(rename or remove that object)"
        )
    return target


def relative(uri: str, base: str | os.PathLike[str]) -> str:
    """``uri`` relative to the folder ``base``, with forward slashes (``cam1/0001/0001.jpg``)."""
    if is_s3(base):
        prefix = str(base).rstrip("/") + "/"
        if not uri.startswith(prefix):
            raise StorageError(f"{uri} is not below {base}")
        return uri[len(prefix) :]
    return Path(os.path.relpath(uri, base)).as_posix()


class _UploadOnClose(io.BytesIO):
    """A write buffer that stores its content at ``uri`` when closed without an error."""

    def __init__(self, uri: str, endpoint: str | None) -> None:
        super().__init__()
        self._uri, self._endpoint = uri, endpoint

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            write_bytes(self._uri, self.getvalue(), self._endpoint)
        super().__exit__(exc_type, exc, tb)


def open_uri(uri: str | os.PathLike[str], mode: str = "rb", endpoint: str | None = None) -> IO[Any]:
    """Open ``uri`` for reading or writing: modes ``rb``, ``r``, ``wb``, ``w`` (text is UTF-8).

    Use it as a context manager. Writes happen atomically when the ``with`` block ends without error.
    """
    if mode not in ("rb", "r", "wb", "w"):
        raise StorageError(f"unsupported mode {mode!r}; use 'rb', 'r', 'wb' or 'w'")
    if mode.startswith("r"):
        raw = io.BytesIO(read_bytes(uri, endpoint))
        return raw if mode == "rb" else io.TextIOWrapper(raw, encoding="utf-8")
    buffer = _UploadOnClose(str(uri), endpoint)
    return buffer if mode == "wb" else _TextUpload(buffer)


class _TextUpload(io.TextIOWrapper):
    def __init__(self, buffer: _UploadOnClose) -> None:
        super().__init__(buffer, encoding="utf-8")
        self._upload = buffer

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.flush()
        self._upload.__exit__(exc_type, exc, tb)


def arrow_filesystem(uri: str, endpoint: str | None = None) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem for ``uri`` and the path to give it (``bucket/key`` on S3)."""
    import pyarrow.fs as pafs

    if not is_s3(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    loc = parse_s3(uri)
    url = endpoint_url(endpoint)
    kwargs: dict[str, Any] = {}
    if url:
        parsed = urlparse(url if "://" in url else f"https://{url}")
        kwargs = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs), f"{loc.bucket}/{loc.key}".rstrip("/")


def download_tree(uri: str, dest: str | os.PathLike[str], endpoint: str | None = None) -> Path:
    """Copy every file below ``uri`` into the local folder ``dest`` (a local ``uri`` is returned as is).

    Files already in ``dest`` with the object's size are kept, so a re-run only fetches what changed or
    is missing. Every key is mapped with :func:`local_path` before anything is fetched: one key that would
    leave ``dest`` (absolute, ``//``, ``..``, backslash, NUL) refuses the whole download with a
    :class:`StorageError` naming it, and nothing is written.
    """
    if not is_s3(uri):
        return Path(uri)
    out = Path(dest)
    wanted = []
    for rel, item, size in sorted(_s3_objects(uri, endpoint)):
        target = local_path(out, rel, item)  # every key is checked before anything is written
        if not _hidden(rel):
            wanted.append((target, item, size))
    for target, item, size in wanted:
        if not (target.is_file() and target.stat().st_size == size):
            write_bytes(target, read_bytes(item, endpoint))
    return out


def upload_tree(src: str | os.PathLike[str], uri: str, endpoint: str | None = None) -> None:
    """Copy every file below the local folder ``src`` to ``uri`` (local or S3)."""
    for item in list_files(src):
        write_bytes(join(uri, relative(item, src)), Path(item).read_bytes(), endpoint)


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_not_found(err: Exception) -> bool:
    return _error_code(err) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


open = open_uri  # the API name; shadows the builtin in this module only
list = list_files


def local_dataset(uri: str, endpoint: str | None = None) -> str:
    """A local directory holding the dataset at ``uri``: the path itself, or for ``s3://`` a cached copy
    (under ``$TVIFM_CACHE`` or ``~/.cache/tvifm``, keyed by the URI; only missing files are fetched)."""
    if not is_s3(uri):
        return uri
    cache = Path(os.environ.get("TVIFM_CACHE", Path.home() / ".cache" / "tvifm")) / "datasets"
    dest = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    return str(download_tree(uri, dest, endpoint))
