"""What the commands (main, predict, adversarial) share: every error that is not a bug ends the
command with one line `error: ...` (io_errors.error) and its exit status.

A module of its own, above the ones whose errors it names (records, checkpoints, data import
io_errors, so it cannot live there without an import cycle).
"""
from __future__ import annotations

from typing import Callable

from intermix_jax import config_lib
from intermix_jax import data
from intermix_jax import io_errors
from intermix_jax import records
from intermix_jax import workdir


def one_line_errors(command: Callable[[], int]) -> int:
  """command()'s exit status, or after one line `error: ...`: 2 for a WorkdirError; 1 for what is
  the user's or the machine's, not a bug: a config, workdir, non-finite-loss or data error (its
  message), the machine's OSError (`os_error_line`). Anything else keeps its traceback."""
  known = (config_lib.ConfigError, workdir.WorkdirConfigError, workdir.WorkdirBusyError,
           records.NonFiniteError, data.LayoutError, data.BadAudioFileError,
           data.SourceUnavailableError, FileNotFoundError)
  try:
    return command()
  except io_errors.WorkdirError as e:
    return io_errors.error(str(e), 2)
  except known as e:
    return io_errors.error(str(e))
  except OSError as e:
    line = io_errors.os_error_line(e)
    if line is None:  # not the machine's state: a bug
      raise
    return io_errors.error(line)
