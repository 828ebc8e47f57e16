"""SIGTERM outside the training loop (imports, data preparation, compilation, the summaries).

main.py's handler calls `note()` and raises `Terminated`, which main.py reports in one line (exit
0; nothing half-written is used). Python can lose that exception: raised where it cannot
propagate (a gc callback, a __del__), it is printed as "Exception ignored in" and dropped. The
note survives, so the trainer stops at its next safe point instead (`stop_if_noted`: after its data
is prepared; once training has begun, at the first step, after saving a checkpoint). Inside the
training loop SIGTERM only sets the trainer's flag (train._TerminationFlag). Light on purpose:
main.py imports it before anything else.
"""
import threading


class Terminated(BaseException):
  """SIGTERM outside the training loop (which saves a checkpoint itself); not an Exception, so
  that no library's `except Exception` swallows it."""


_NOTED = threading.Event()


def note() -> None:
  """Records a SIGTERM received outside the training loop."""
  _NOTED.set()


def noted() -> bool:
  return _NOTED.is_set()


def stop_if_noted() -> None:
  """Raises Terminated if a SIGTERM was noted (its own exception may have been swallowed)."""
  if _NOTED.is_set():
    raise Terminated()
