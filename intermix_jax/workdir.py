"""A workdir belongs to one config and one dataset: `config.json` and `dataset.json` record them.

`check_or_store_config` / `check_or_store_dataset` write them on the first run and check them on
a later one; `lock(workdirs)` allows one training per workdir. What is refused, and the guarantees:
WORKSPACE.md "What lands in a workdir" and "Resume, preemption and failures".
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import json
import os
import platform
import socket
import subprocess
import sys
import time
import types
from typing import Any, Iterable, Iterator

from absl import logging
import ml_collections

CONFIG_FILE = 'config.json'
DATASET_FILE = 'dataset.json'
RESULTS_FILE = 'results.json'
CHECKPOINTS_DIR = 'checkpoints'
LOCK_FILE = '.training.lock'
# Fields that may change between runs in one workdir: they do not change what is computed (stacked
# or alone: equal to float32 rounding, multirun.py; data_on_device: the same batches).
MUTABLE_FIELDS = ('log_every_steps', 'data_dir', 'manual_dir', 'nan_policy', 'stack_runs',
                  'stack_method', 'data_on_device')
# Locations of a custom dataset: may change when dataset.json (checked by content) exists.
DATA_FIELDS = ('audio_dir', 'metadata_csv')
# Fields added since workdirs were written, with the value that reproduces what an older workdir
# was trained with: its config.json without the field matches that value only (mixing.pairing: a
# current value that resolves to shared pairs for the run's strategy; docs/method.md §3).
ADDED_FIELDS = {'model.precision': 'float32', 'seeds': None, 'data_on_device': False,
                'mixing.pairing': 'shared'}
# Fields removed from the config: a stored config.json that still has one resumes, whatever its
# value (model.conv_impl chose between equal computations).
REMOVED_FIELDS = ('model.conv_impl',)
# What flock raises where the file system has no file locks (the lock is then skipped, warned).
NO_FILE_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


class WorkdirConfigError(ValueError):
  pass


def strategy_of(config: dict):
  """The `mixing.Strategy` of a stored config dict (config.json, results.json's config) by
  `mixing.build_strategy`, or None when this version cannot build it."""
  from intermix_jax import mixing  # pylint: disable=import-outside-toplevel
  options = dict(config.get('mixing') or {})
  if isinstance(options.get('eligible_layers'), list):
    options['eligible_layers'] = tuple(options['eligible_layers'])
  try:
    return mixing.build_strategy(types.SimpleNamespace(strategy=config['strategy'],
                                                       mixing=options))
  except (KeyError, ValueError, TypeError):
    return None


def with_added_fields(stored: dict) -> dict:
  """A copy of a stored config.json as this version reads it: every field of ADDED_FIELDS it
  lacks set to its value there, the fields of REMOVED_FIELDS dropped."""
  out = json.loads(json.dumps(stored))
  for key in (*ADDED_FIELDS, *REMOVED_FIELDS):
    *parents, leaf = key.split('.')
    node = functools.reduce(lambda n, p: n.get(p) if isinstance(n, dict) else None, parents, out)
    if isinstance(node, dict) and key in ADDED_FIELDS:
      node.setdefault(leaf, ADDED_FIELDS[key])
    elif isinstance(node, dict):
      node.pop(leaf, None)
  return out


class WorkdirBusyError(RuntimeError):
  """Another process trains in the workdir (one line naming it: pid, host, since when)."""


# Locks held by this process: real path of the lock file -> [file descriptor or None, depth].
_HELD: dict[str, list] = {}


def _holder_words(fd: int) -> str:
  """'pid 4242 on host h since 2025-01-02 10:11:12 UTC' from the lock file's record."""
  try:
    holder = json.loads(os.pread(fd, 4096, 0).decode() or 'null')
    pid, host, since = int(holder['pid']), str(holder['host']), str(holder['since'])
  except (OSError, ValueError, TypeError, KeyError):
    return 'a process that has not recorded itself yet'
  return f'pid {pid} on host {host} since {since}'


def _acquire(workdir: str) -> str:
  """Takes (or re-enters) the lock of `workdir`; returns its key in _HELD."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  key = os.path.realpath(path)
  if key in _HELD:
    _HELD[key][1] += 1
    return key
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # nothing truncated yet
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder_words(fd)
    os.close(fd)
    raise WorkdirBusyError(
        f'workdir {workdir} is in use by another training: {holder} (lock {path}); refusing to '
        f'train in it at the same time: wait for that one to end (SIGTERM or Ctrl-C stops it with '
        f'a checkpoint) and rerun, or choose another --workdir') from None
  except OSError as e:
    os.close(fd)
    if e.errno not in NO_FILE_LOCKS:
      raise OSError(e.errno, e.strerror, path) from e
    logging.warning('%s: this file system has no file locks (%s): nothing stops a second training '
                    'in this workdir at the same time', workdir, e.strerror)
    _HELD[key] = [None, 1]
    return key
  record = dict(pid=os.getpid(), host=socket.gethostname(),
                since=time.strftime('%Y-%m-%d %H:%M:%S %Z'), command=' '.join(sys.argv)[:500])
  with contextlib.suppress(OSError):  # e.g. disk full: the lock holds, without its details
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
  _HELD[key] = [fd, 1]
  return key


def _release(key: str) -> None:
  held = _HELD[key]
  held[1] -= 1
  if held[1] == 0:
    del _HELD[key]
    if held[0] is not None:
      with contextlib.suppress(OSError):
        os.ftruncate(held[0], 0)  # no details of a holder that has gone
      os.close(held[0])  # releases the lock


@contextlib.contextmanager
def lock(workdirs: Iterable[str]) -> Iterator[None]:
  """Holds the training lock of every workdir of `workdirs` (created if missing) until the block
  ends; re-entrant within this process.

  Raises:
    WorkdirBusyError: another process holds one of them (the ones taken are released).
  """
  with contextlib.ExitStack() as taken:
    for workdir in workdirs:
      taken.callback(_release, _acquire(workdir))
    yield


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """JSON-compatible dict of `config` (tuples become lists)."""
  return json.loads(config.to_json())


def flat_config(d: dict, prefix: str = '') -> dict[str, Any]:
  """A config dict as {dotted key: value}: {'opt': {'lr': 0.1}} -> {'opt.lr': 0.1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat_config(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_differences(stored: dict, current: dict, ignore=()) -> list[str]:
  """'field: stored vs current' lines for every differing field (but MUTABLE_FIELDS and `ignore`),
  `stored` read as `with_added_fields` reads it (mixing.pairing: ADDED_FIELDS' comment)."""
  old = flat_config(stored)
  a, b = flat_config(with_added_fields(stored)), flat_config(current)
  strategy = strategy_of(current) if 'mixing.pairing' in set(b) - set(old) else None
  if strategy is not None:  # standard pairs nothing (no .pairing): its 'shared' matches
    b['mixing.pairing'] = getattr(strategy, 'pairing', 'shared')
  keys = sorted(k for k in set(old) | set(b) if k not in MUTABLE_FIELDS and k not in ignore)
  return [f'{k}: {a.get(k, "<absent>")!r} (workdir) vs {b.get(k, "<absent>")!r} (now)'
          for k in keys if a.get(k, '<absent>') != b.get(k, '<absent>')]


def read_json_object(path: str, error_type: type[Exception] = ValueError,
                     fix: str = 'is it truncated?') -> dict:
  """The JSON object in `path` (a workdir's config.json, results.json, ...).

  Raises:
    error_type: one line naming the file if it cannot be read, is not valid JSON (e.g. truncated
      by a full disk; the line ends with `fix`) or holds something other than an object.
  """
  try:
    with open(path) as f:
      value = json.load(f)
  except json.JSONDecodeError as e:
    raise error_type(f'{path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); '
                     f'{fix}') from None
  except (OSError, UnicodeDecodeError) as e:
    raise error_type(f'{path} cannot be read ({e})') from None
  if not isinstance(value, dict):
    raise error_type(f'{path} holds a JSON {type(value).__name__}, not an object')
  return value


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to `path` via a temporary file and a rename (never a half-written file)."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:  # e.g. disk full: the previous file stays whole; the error names `path`
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise OSError(e.errno, e.strerror, path) from e


def check_or_store_config(workdir: str, config: ml_collections.ConfigDict, *,
                          write: bool = True) -> None:
  """Stores `config` in `workdir/config.json` (`workdir` created if missing), or checks it equals
  the one stored there; `write` False (processes other than 0): only checks.

  Raises:
    WorkdirConfigError: the workdir was created by a different config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = config_to_dict(config)
  if os.path.exists(path):
    stored = read_json_object(path, WorkdirConfigError, f'delete it to reuse {workdir}')
    # fold='all': the folds' workdirs fold_<k>/ hold the dataset identities.
    checked_by_content = bool(glob.glob(os.path.join(glob.escape(workdir), DATASET_FILE)) or
                              glob.glob(os.path.join(glob.escape(workdir), 'fold_*', DATASET_FILE)))
    diffs = config_differences(stored, current, DATA_FIELDS if checked_by_content else ())
    if diffs:
      raise WorkdirConfigError(
          f'workdir {workdir} was created by a different config; refusing to mix runs. '
          f'Use a new --workdir, or delete {workdir} to start over. Differences: ' + '; '.join(diffs))
  elif write:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(path, current)


# (identity key, words) compared in this order; fold_clips and the digests are handled apart.
_IDENTITY_FIELDS = (('dataset', 'dataset'), ('builder', 'builder'), ('version', 'builder version'),
                    ('sample_rate', 'sample rate'), ('class_names', 'classes'),
                    ('num_folds', 'folds'), ('test_fold', 'test fold'),
                    ('train_clips', 'train clips'), ('test_clips', 'test clips'),
                    ('skipped_files', 'skipped bad files'))


def dataset_differences(stored: dict, current: dict) -> list[str]:
  """'what stored -> current' phrases for every difference of two dataset identities.

  Args:
    stored, current: `data.RunData.identity` dicts (the workdir's and this run's).
  """
  a, b = stored.get('fold_clips') or {}, current.get('fold_clips') or {}
  pairs = [(words, stored.get(key), current.get(key)) for key, words in _IDENTITY_FIELDS]
  pairs += [(f'fold {k} clips', a.get(k), b.get(k))
            for k in sorted(set(a) | set(b), key=lambda k: (len(k), k))]
  lines = [f'{words} {x} -> {y}' for words, x, y in pairs if x != y]
  for part in ('train', 'test'):
    x, y = stored.get(f'{part}_digest'), current.get(f'{part}_digest')
    if x != y and stored.get(f'{part}_clips') == current.get(f'{part}_clips'):  # else counted
      lines.append(f'{part} clips: other files, classes or lengths (digest {x} -> {y})')
  x, y = stored.get('source_fingerprint'), current.get('source_fingerprint')
  if x is not None and y is not None and x != y:
    lines.append(f'source files (names, folds, classes, sizes) fingerprint {x} -> {y}')
  return lines


def check_or_store_dataset(workdir: str, identity: dict, *, resuming: bool,
                           write: bool = True) -> None:
  """Records the run's dataset identity (`data.RunData.identity`) in `workdir/dataset.json`, or
  checks it on a resume; `write` False (processes other than 0): only checks.

  Args:
    resuming: the workdir holds a checkpoint that this run will continue from. When False the
      identity is (re)written: nothing trained on other data is carried on.
  Raises:
    WorkdirConfigError: resuming and the data differ (one line naming the workdir and what
      changed), or dataset.json is unreadable.
  """
  path = os.path.join(workdir, DATASET_FILE)
  if resuming and os.path.exists(path):
    stored = read_json_object(path, WorkdirConfigError, f'delete {workdir} to start over')
    diffs = dataset_differences(stored, identity)
    if diffs:
      raise WorkdirConfigError(
          f'workdir {workdir} was trained on other data than this run reads (its {DATASET_FILE} '
          f'vs now): {"; ".join(diffs)}. Refusing to resume on changed data: use a new '
          f'--workdir, or delete {workdir} to start over')
  elif write:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(path, identity)


def versions() -> dict[str, str]:
  """Versions of the software that produced a result (results.json `versions`)."""
  import flax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax
  import orbax.checkpoint as ocp
  out = dict(python=platform.python_version(), jax=jax.__version__, flax=flax.__version__,
             optax=optax.__version__, orbax_checkpoint=getattr(ocp, '__version__', '?'),
             numpy=np.__version__, platform=jax.default_backend(),
             devices=f'{jax.device_count()} x {jax.devices()[0].device_kind}',
             processes=str(jax.process_count()))
  try:
    import intermix_jax
    out['intermix_jax'] = getattr(intermix_jax, '__version__', '0.1.0')
    repo = os.path.dirname(os.path.dirname(os.path.abspath(intermix_jax.__file__)))
    out['git_commit'] = subprocess.run(
        ['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True, text=True,
        timeout=10).stdout.strip() or 'unknown'
  except Exception:  # not a git checkout, no git: the version alone will do
    out.setdefault('git_commit', 'unknown')
  return out
