"""Write failures that are the machine's state (disk full, quota, permissions), told apart from bugs.

`is_disk_full` recognises a full disk however the writing library reports it, anywhere in the
exception's chain: an OSError (ENOSPC), tensorstore's ValueError (orbax: 'No space left on device
[os_error_code=28]'), array_record's RuntimeError (TFDS preparation). `WriteError` is the one-line
OSError raised instead; `error` prints the one line `error: ...` of every command (cli.py says
which errors get it). Imports nothing of JAX or TFDS at module level.
"""
from __future__ import annotations

import errno
import re
import shutil
import sys

IO_ERROR_TEXT = re.compile(r"No space left on device|os_error_code|RESOURCE_EXHAUSTED|"
                           r"PERMISSION_DENIED|Read-only file system|Disk quota exceeded")
ENOSPC_TEXT = re.compile(r"No space left on device|os_error_code='?%d\b|Disk quota exceeded"
                         % errno.ENOSPC)

# errno of an OSError that is the machine's state, not a bug -> hint ({}: where to write instead).
_OS_ERROR_HINTS = {
    errno.ENOSPC: 'the disk is full: free space there or choose another {}',
    errno.EDQUOT: 'the disk quota is exhausted: free space or choose another {}',
    errno.EROFS: 'a read-only file system: choose a writable {}',
    errno.EACCES: 'choose a {} you can write, or change its permissions',
    errno.EPERM: 'choose a {} you can write, or change its permissions',
    errno.ENOTDIR: 'a file stands where a directory is needed: choose another {}',
}
_OS_ERROR_HINTS[errno.EEXIST] = _OS_ERROR_HINTS[errno.ENOTDIR]  # os.makedirs over a file


class WriteError(OSError):
  """A file of the run could not be written (disk full, no permission, ...): one line naming the
  path, what is kept and what to do. Raised as WriteError(errno, message); str() is the message
  alone."""

  def __str__(self) -> str:
    return str(self.strerror)


class WorkdirError(RuntimeError):
  """A trained workdir cannot be used (no config, no readable checkpoint, run not finished, ...):
  one line; exit status 2 of predict and adversarial (trained.load_workdir raises it)."""


def chain(error: BaseException):
  """`error`, then its causes and contexts (each once)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_io_error(error: BaseException) -> bool:
  """Whether `error` (or anything in its chain) is an OSError or says a file-system error."""
  return any(isinstance(e, OSError) or IO_ERROR_TEXT.search(str(e)) for e in chain(error))


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (or anything in its chain) is a full disk or an exhausted quota."""
  return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
             or ENOSPC_TEXT.search(str(e)) for e in chain(error))


def first_line(error: BaseException, limit: int = 300) -> str:
  """'Type: first line of the message' (at most `limit` characters; orbax's can be huge)."""
  for e in chain(error):
    if isinstance(e, OSError) and e.strerror:
      return f'{type(e).__name__}: {e.strerror}'
  text = str(error).strip()
  line = f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'
  return line if len(line) <= limit else line[:limit - 3] + '...'


def error(line: str, status: int = 1) -> int:
  """Prints `error: <line>` on stderr; returns the exit status `status`."""
  print(f'error: {line}', file=sys.stderr, flush=True)
  return status


def os_error_line(e: OSError, where: str = '--workdir / data_dir') -> str | None:
  """One line for an OSError that names a path and is the machine's state, its hint naming
  `where` to write instead; None otherwise."""
  if type(e).__module__.startswith('intermix_jax'):  # the project's own: the message says it all
    return str(e)
  hint = _OS_ERROR_HINTS.get(e.errno)
  if hint is None or not e.filename:
    return None
  return f'{e.filename}: {e.strerror} ({errno.errorcode[e.errno]}); {hint.format(where)}'


def mib(n: float) -> str:
  return f'{n / 2**20:.1f} MiB' if n >= 2**20 else f'{n / 2**10:.0f} KiB'


def free_space(path: str) -> str:
  """' (X MiB free)' on the file system of `path`, or '' when that cannot be told."""
  try:
    return f' ({mib(shutil.disk_usage(path).free)} free)'
  except OSError:
    return ''
