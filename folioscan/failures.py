"""Failures told apart: transient ones (throttling, 5xx, timeouts, resets, a dead worker, out of
memory) are worth retrying; permanent ones (bad data) are not. Every error row carries the kind."""
from __future__ import annotations

TRANSIENT = "transient"
PERMANENT = "permanent"

_TRANSIENT_TYPES = (TimeoutError, ConnectionError, MemoryError)
_TRANSIENT_NAMES = {  # by class name, so this module imports neither botocore nor ray nor torch
    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ResponseStreamingError", "IncompleteReadError", "ThrottlingException", "SlowDown",
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
    "ObjectLostError", "OwnerDiedError", "TaskUnschedulableError", "OutOfMemoryError",
    "RecordUnreadable",  # pipeline/duplicates.py: the output's record of a first copy, not the book, failed
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}


def classify(exc: BaseException) -> str:
    """TRANSIENT or PERMANENT for an exception, looking through its causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _TRANSIENT_TYPES) or any(c.__name__ in _TRANSIENT_NAMES for c in type(exc).__mro__):
            return TRANSIENT
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if isinstance(getattr(exc, "response", None), dict) else ""
        if code in _TRANSIENT_CODES:
            return TRANSIENT
        exc = exc.__cause__ or exc.__context__
    return PERMANENT


_OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """CPU MemoryError or torch's (CUDA) OutOfMemoryError, by name (no torch import here), or a
    RuntimeError from a CUDA library that failed to allocate (cuBLAS, cuDNN, "CUDA error: out of memory")."""
    if isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _OOM_MESSAGES)


def describe(exc: BaseException) -> str:
    """The error text of a row: exception type and message."""
    return f"{type(exc).__name__}: {exc}"
