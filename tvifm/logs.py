"""A job's console keeps to tvifm's own output; the frameworks' logs go to a file (docs/design.md).

A job (``jobs/pipeline.py``, ``jobs/train.py``, ``jobs/caption.py``) runs inside :func:`quiet_frameworks`,
which prints once where the log file is. While it is active:

* the driver's Python loggers of Ray (``ray``, ``ray.data``, ``ray.train``, ``ray.serve`` ...), DeepSpeed
  and MLflow, and the warnings raised from those packages, write to the file;
* :func:`tvifm.cluster.ray_session` starts Ray inside :func:`ray_output`: what Ray's workers print
  (Ray Train's controller and workers, DeepSpeed in the workers, the captioning actors) and what Ray's
  C++ core writes on the driver's stderr go to the file too, except the trainer's epoch progress bars
  printed inside Ray Train workers, which are redrawn on the console; Ray Data's own progress bars
  and progress logging are off (the captioning job has its own bar);
* MLflow's artifact download bars and run links, and Hugging Face's loading/saving bars, are off.

``--verbose`` (:func:`add_verbose_flag`) leaves everything on the console, as without this module.
Nothing here imports Ray or MLflow unless the job already uses them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tvifm.config.schema import Config

FRAMEWORK_LOGGERS = ("ray", "deepspeed", "DeepSpeed", "mlflow")  # and their children
FRAMEWORK_PACKAGES = ("ray", "deepspeed", "mlflow")  # warnings raised from their files go to the log
# Frameworks' own progress bars and MLflow's run links (printed straight to stdout; the pipeline prints
# its MLflow address itself): off, unless the user set these variables
QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
RAY_PRINT_HANDLER = "ray_print_logs"  # Ray's handler of forwarded worker output (ray/_private/worker.py)
OUR_HANDLER = "tvifm_logs"
# The trainer's tqdm bar inside a Ray Train worker: "<stage> epoch <i>/<n>: ..." (tvifm.engine.trainer).
WORKER_PROGRESS = re.compile(r"^\w+ epoch \d+/\d+: ")
_BAR_COUNT = re.compile(r"\| *(\d+)/(\d+) \[")
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_active: _LogRouter | None = None


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose`` (Ray's, DeepSpeed's and MLflow's own logs on the console) to a job's parser."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Ray's, DeepSpeed's and MLflow's own logs here instead of in the log file",
    )


def log_dir(out_dir: str) -> Path:
    """Where a job's log file goes: ``<out_dir>/logs``, or a temporary folder when ``out_dir`` is on S3
    or not writable here (a container with a read-only file system)."""
    fallback = Path(tempfile.gettempdir()) / "tvifm-logs"
    if out_dir.startswith("s3://"):
        return fallback
    target = Path(out_dir) / "logs"
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    return target if os.access(existing, os.W_OK) else fallback


def quiet_job(
    cfg: Config, job: str, *, verbose: bool = False
) -> contextlib.AbstractContextManager[Path | None]:
    """:func:`quiet_frameworks` for a job that trains with ``cfg``: the file in ``<cfg.out_dir>/logs``,
    MLflow's logging redirected from the start when the job tracks."""
    preload = ("mlflow",) if cfg.tracking.enabled else ()
    return quiet_frameworks(log_dir(cfg.out_dir), job, verbose=verbose, preload=preload)


@contextlib.contextmanager
def quiet_frameworks(
    directory: str | Path, job: str, *, verbose: bool = False, preload: Sequence[str] = ()
) -> Iterator[Path | None]:
    """Send the frameworks' logs to ``<directory>/<job>-<timestamp>.log`` while the block runs (see the
    module docstring) and print that path once; yields it (``None`` when ``verbose``: nothing moves).

    The file is created when the first framework line arrives. A framework that sets up its console
    logging when imported (MLflow) is redirected if imported before the block, when Ray starts, or
    when named in ``preload`` (imported here if installed: pass what the job will use).
    """
    global _active
    if verbose:
        yield None
        return
    if _active is not None:  # a job inside a job: the outer one routes already
        yield _active.path
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    router = _LogRouter(Path(directory) / f"{job}-{stamp}-{os.getpid()}.log")
    notice = f"[tvifm] Ray, DeepSpeed and MLflow logs: {router.path} (--verbose prints them here)"
    print(notice, file=sys.stderr, flush=True)  # stderr: a job's JSON on stdout stays machine-readable
    _active = router
    router.start(preload)
    ok = False
    try:
        yield router.path
        ok = True
    finally:
        written = router.file.opened
        router.stop()
        _active = None
        if not ok and written:
            print(f"[tvifm] the frameworks' logs of this run are in {router.path}", file=sys.stderr)


@contextlib.contextmanager
def ray_output() -> Iterator[_RayStart]:
    """Wrap starting and stopping Ray (``ray.init`` ... ``ray.shutdown``) in a job: inside
    :func:`quiet_frameworks`, route what Ray prints to the log file. Call ``.started()`` on the yielded
    object right after ``ray.init``. Outside :func:`quiet_frameworks` this changes nothing."""
    if _active is None:
        yield _RayStart(None)
        return
    with _active.ray() as start:
        yield start


class _LogFile:
    """The log file, opened on first use (its folder made then), shared by every writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream: TextIO | None = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._stream is not None

    def stream(self) -> TextIO:
        if self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(self.path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        return self._stream

    def write(self, text: str) -> None:
        self.writelines([text])

    def writelines(self, lines: Iterable[str]) -> None:
        """Append each text as a line (a newline added where missing)."""
        with self._lock:
            stream = self.stream()
            for text in lines:
                stream.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class _FileHandler(logging.Handler):
    """A logging handler writing formatted records to the shared :class:`_LogFile`."""

    def __init__(self, file: _LogFile) -> None:
        super().__init__(logging.INFO)  # what the frameworks' console handlers show, not their DEBUG
        self.file = file
        self.setFormatter(logging.Formatter(LINE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.file.write(self.format(record))
        except Exception:
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class _LogRouter:
    """Everything :func:`quiet_frameworks` changes, and how to undo it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = _LogFile(path)
        self.handler = _FileHandler(self.file)
        self._loggers: dict[str, tuple[list[logging.Handler], bool, int]] = {}
        self._env: dict[str, str] = {}  # what start() set
        self._showwarning: Any = None
        self._temporary: set[int] = set()  # streams of ours that a framework handler may have captured

    def start(self, preload: Sequence[str] = ()) -> None:
        for name in preload:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        for key, value in QUIET_ENV.items():
            if key not in os.environ:
                self._env[key] = value
                os.environ[key] = value
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        self.reroute()

    def stop(self) -> None:
        warnings.showwarning = self._showwarning
        for name, (handlers, propagate, level) in self._loggers.items():
            logger = logging.getLogger(name)
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        self._loggers.clear()
        for key, value in self._env.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        self._env.clear()
        self.file.close()

    # -- Python loggers and warnings ----------------------------------------------------------------
    def reroute(self) -> None:
        """Point every framework logger that prints to the console at the log file instead."""
        names = set(FRAMEWORK_LOGGERS) & set(logging.root.manager.loggerDict)
        names |= {
            name
            for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger)
            and name.split(".")[0] in FRAMEWORK_LOGGERS
            and any(_is_console(h) for h in logger.handlers)
        }
        for name in names:
            self._reroute(logging.getLogger(name))

    def _reroute(self, logger: logging.Logger) -> None:
        if logger.name not in self._loggers:
            kept = [h for h in logger.handlers if id(getattr(h, "stream", None)) not in self._temporary]
            self._loggers[logger.name] = (kept, logger.propagate, logger.level)
        logger.handlers = [h for h in logger.handlers if not _is_console(h) and h is not self.handler]
        logger.addHandler(self.handler)
        logger.propagate = False

    def _warning(self, message: Any, category: type, filename: str, lineno: int, *args: Any) -> None:
        if _in_framework(filename):
            self.file.write(warnings.formatwarning(message, category, filename, lineno).rstrip("\n"))
        else:
            self._showwarning(message, category, filename, lineno, *args)

    # -- Ray ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def ray(self) -> Iterator[_RayStart]:
        """Native stderr to the file for Ray's whole life; Python's stderr to the file while it starts
        (``ray.init`` gives the ``ray`` logger a handler on the stderr of that moment)."""
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(self.file.stream().fileno(), 2)
        console = io.TextIOWrapper(
            io.FileIO(saved_fd, "w", closefd=False),
            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
            errors="replace",
            line_buffering=True,
            write_through=True,
        )
        original = sys.stderr
        sys.stderr = self.file.stream()
        self._temporary.add(id(sys.stderr))
        start = _RayStart(self, console)
        try:
            yield start
        finally:
            start.stop()
            sys.stderr = original
            with contextlib.suppress(Exception):
                console.close()  # a writer still holding it fails instead of writing to a reused fd
            os.dup2(saved_fd, 2)
            os.close(saved_fd)

    def worker_output(self, data: dict[str, Any], bars: _WorkerBars) -> None:
        """Ray's forwarded worker output: the trainer's progress bars to the console, the rest to the
        file with Ray's ``(name pid=...)`` prefix."""
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its monitor's whole log: only its events, as Ray prints
            self.file.writelines(f"(autoscaler) {line}" for line in _autoscaler_events(lines))
            return
        name = data.get("actor_name") or data.get("task_name")
        where = "" if data.get("ip") == data.get("localhost") else f", ip={data.get('ip')}"
        prefix = f"({name + ' ' if name else ''}pid={data.get('pid')}{where})"
        self.file.writelines(f"{prefix} {line}" for line in lines if not bars.show(line))


class _RayStart:
    """What :func:`ray_output` yields: ``started()`` finishes the routing once ``ray.init`` returned."""

    def __init__(self, router: _LogRouter | None, console: TextIO | None = None) -> None:
        self.router = router
        self.console = console
        self._ray_handler: tuple[str, Any] | None = None
        self._progress: tuple[Any, bool] | None = None
        self._bars: _WorkerBars | None = None

    def started(self) -> None:
        if self.router is None or self.console is None:
            return
        import ray.data  # configures its loggers when imported (the caption and train jobs use it anyway)

        sys.stderr = self.console
        router = self.router
        router.reroute()
        context = ray.data.DataContext.get_current()
        self._progress = (context, context.enable_progress_bars)
        context.enable_progress_bars = False
        dispatcher = _dispatcher()
        if dispatcher is None:  # a Ray without it: its worker output stays on the console
            router.file.write(
                f"tvifm: Ray {ray.__version__} has no {RAY_PRINT_HANDLER}; worker logs unrouted"
            )
            return
        bars = self._bars = _WorkerBars(lambda: sys.stderr)
        self._ray_handler = next((h for h in dispatcher.handlers if h[0] == RAY_PRINT_HANDLER), None)
        dispatcher.remove_handler(RAY_PRINT_HANDLER)
        dispatcher.add_handler(OUR_HANDLER, lambda data: router.worker_output(data, bars))

    def stop(self) -> None:
        dispatcher = _dispatcher() if self.router is not None else None
        if dispatcher is not None:
            dispatcher.remove_handler(OUR_HANDLER)
            if self._ray_handler is not None and _ray_connected():  # Ray outlives us: give it back
                dispatcher.add_handler(*self._ray_handler)
        if self._progress is not None:
            context, enabled = self._progress
            context.enable_progress_bars = enabled
        if self._bars is not None:
            self._bars.close()


def _dispatcher() -> Any:
    """Ray's dispatcher of forwarded worker output (``ray.init(log_to_driver=True)`` registers
    :data:`RAY_PRINT_HANDLER` on it); None if this Ray has none."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher
    except ImportError:
        return None
    needed = ("handlers", "add_handler", "remove_handler")
    return (
        global_worker_stdstream_dispatcher
        if all(hasattr(global_worker_stdstream_dispatcher, a) for a in needed)
        else None
    )


def _autoscaler_events(lines: list[str]) -> list[str]:
    try:
        from ray._private.worker import filter_autoscaler_events
    except ImportError:
        return []
    return list(filter_autoscaler_events(lines))


def _ray_connected() -> bool:
    import ray

    return bool(ray.is_initialized())


class _WorkerBars:
    """Redraws a progress bar printed inside a Ray worker as one live line on the console.

    Ray forwards a worker's stderr in pieces that each hold one or more of tqdm's ``\\r``-separated
    redraws; the latest redraw is shown, and the line ends when the bar reaches its total.
    """

    def __init__(self, console: Any) -> None:
        self._console = console
        self._open = False
        self._finished: str | None = None

    def show(self, line: str) -> bool:
        """Draw ``line`` if it is a progress bar of ours; False (nothing drawn) otherwise."""
        states = [s.rstrip() for s in line.split("\r") if WORKER_PROGRESS.match(s)]
        if not states:
            return False
        state = states[-1]
        title = state.split(":", 1)[0]
        count = _BAR_COUNT.search(state)
        done = bool(count) and count.group(1) == count.group(2)  # type: ignore[union-attr]
        if done and self._finished == title:
            return True  # tqdm redraws a finished bar once more when it closes
        stream = self._console()
        stream.write("\r" + state)
        self._open = not done
        self._finished = title if done else None
        if done:
            stream.write("\n")
        stream.flush()
        return True

    def close(self) -> None:
        if self._open:
            self._console().write("\n")
            self._open = False


@functools.lru_cache(maxsize=1)
def _framework_dirs() -> tuple[str, ...]:
    from importlib.util import find_spec

    dirs = []
    for name in FRAMEWORK_PACKAGES:
        with contextlib.suppress(ImportError, ValueError):
            spec = find_spec(name)
            dirs.extend(spec.submodule_search_locations or [] if spec else [])
    return tuple(os.path.join(d, "") for d in dirs)


def _in_framework(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_framework_dirs())
