"""A quiet terminal: the progress line and the summary, not library chatter; `--verbose` brings it back.

One place decides what reaches the terminal. The CLI calls `configure()` first thing and runs the
job inside `native_stderr()`; the Ray executor takes its `ray.init` arguments from
`ray_init_kwargs()`. Nothing is thrown away: Ray's C++ log lines of the driver process go to a
file whose path is logged, and Ray's own per-process logs stay in its session folder as usual. The
raylet's error notices ("A worker died or was killed ...", several lines each), which Ray's driver
prints to stdout whatever `log_to_driver` says, go to that file too (`_route_raylet_notices`).
Log lines spell control characters out (`VisibleFormatter`): a file name that holds an escape
sequence is shown, never obeyed, by the terminal.
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Iterator

from folioscan.text.safe import visible

ENV = "FOLIOSCAN_VERBOSE"  # "1": verbose; read by a driver that did not go through the CLI
_NOISY_LOGGERS = ("ray", "ray.data", "botocore", "boto3", "urllib3", "s3transfer", "filelock", "fsspec",
                  "transformers", "torch", "PIL")

log = logging.getLogger(__name__)


def verbose() -> bool:
    return os.environ.get(ENV) == "1"


def configure(is_verbose: bool, quiet: bool = False) -> None:
    """Logging, warnings and Ray's environment for this process (and the Ray processes it starts)."""
    os.environ[ENV] = "1" if is_verbose else "0"
    level = logging.WARNING if quiet and not is_verbose else logging.INFO
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a process that set up its own logging keeps it
        handler = logging.StreamHandler()
        handler.setFormatter(VisibleFormatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(level)
    _library_log_levels()
    if is_verbose:
        warnings.simplefilter("default")
        return
    warnings.simplefilter("ignore")
    # Ray's start-up notices (usage stats, the container CPU-limit hint); setdefault: a value the
    # user exported wins.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # Ray worker processes inherit it


class VisibleFormatter(logging.Formatter):
    """Log lines with control characters written as visible escapes (`\\x1b`); line breaks kept (tracebacks)."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), keep_newlines=True)


def _library_log_levels() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose() else logging.ERROR)


def ray_init_kwargs() -> dict:
    """Arguments every `ray.init` of folioscan passes: workers' output reaches the terminal only
    when verbose (failures become error rows either way). Called after `import ray`, which sets
    up Ray's own loggers, so their levels are set again here."""
    _library_log_levels()
    _route_raylet_notices()
    loud = verbose()
    return dict(include_dashboard=False, log_to_driver=loud, configure_logging=loud,
                **({"logging_level": logging.INFO} if loud else {}))


_raylet_notices = 0  # routed off stdout in this process


def _route_raylet_notices() -> None:
    """Ray's driver has a thread that prints every error notice the raylet publishes (a worker or actor
    process died, ...) to stdout through `ray._private.worker.print_to_stdstream`, with `log_to_driver`
    off too. Unless verbose, those notices (`pid` "raylet") are written to fd 2 instead: inside
    `native_stderr()` that is the native driver log, whose path is logged at the end. The executor
    logs its own one-line account of a lost actor."""
    try:
        import ray._private.worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError) as e:  # another Ray layout: its notices print as Ray prints them
        log.debug("Ray's notices not routed: %s", e)
        return
    if getattr(original, "folioscan_routed", False):
        return

    def print_to_stdstream(data, ignore_prefix, *args, **kwargs):
        global _raylet_notices
        if verbose() or not isinstance(data, dict) or data.get("pid") != "raylet":
            return original(data, ignore_prefix, *args, **kwargs)
        _raylet_notices += 1
        text = "".join(f"(raylet) {line}\n" for notice in data.get("lines") or [] for line in str(notice).splitlines())
        try:
            os.write(2, text.encode("utf-8", "backslashreplace"))
        except OSError:
            pass

    print_to_stdstream.folioscan_routed = True
    ray_worker.print_to_stdstream = print_to_stdstream


@contextmanager
def native_stderr() -> Iterator[None]:
    """Unless verbose: point file descriptor 2 at a log file while Ray runs in this process, so Ray's
    C++ log lines (written straight to fd 2, past Python's logging) land there; Python's
    sys.stderr keeps the terminal, so the progress bar, warnings we do show and errors still
    reach the user. The file is kept only when something was written to it. A Ray started inside
    is shut down inside, so its exit chatter is caught too."""
    ray_was_up = _ray_up()
    notices_before = _raylet_notices
    if verbose():
        try:
            yield
        finally:
            _shutdown_ray_unless(ray_was_up)
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (some daemons): nothing to keep quiet
        yield
        return
    fd, path = tempfile.mkstemp(prefix="folioscan-ray-driver-", suffix=".log")
    old_stderr = sys.stderr
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    for handler in logging.getLogger().handlers:  # basicConfig's handler holds the old object
        if isinstance(handler, logging.StreamHandler) and handler.stream is old_stderr:
            handler.setStream(sys.stderr)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        try:
            _shutdown_ray_unless(ray_was_up)
        finally:
            os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(old_stderr)
        sys.stderr.close()
        sys.stderr = old_stderr
        if _raylet_notices > notices_before:
            log.info("%d notice(s) of Ray's raylet (a worker died, ...) are in its native driver log: %s",
                     _raylet_notices - notices_before, path)
        elif os.path.getsize(path):
            log.debug("Ray's native driver log: %s", path)
        else:
            os.remove(path)


def drop_colour_reset() -> None:
    """Ray's CLI logger calls colorama.init() when it is imported (during ray.init), which registers an
    exit handler writing ESC[0m to stdout when stdout is a terminal: a stray escape code after the run
    summary. Nothing of folioscan's output is coloured, so the handler is removed."""
    for name, module in list(sys.modules.items()):
        if name.endswith("colorama.initialise") and callable(getattr(module, "reset_all", None)):
            atexit.unregister(module.reset_all)


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _shutdown_ray_unless(was_up: bool) -> None:
    if not was_up and _ray_up():
        sys.modules["ray"].shutdown()
    drop_colour_reset()
