"""A workdir belongs to one config: `workdir/config.json` records it, a different config is refused.

The first run writes the config; every later run in the same workdir (resume after a kill or a
preemption) must present the same config, or `check_or_store_config` raises `WorkdirConfigError`
naming the workdir and each differing field. Fields that do not change what is trained (logging
cadence, data locations, what to do after a non-finite step) may differ.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

CONFIG_FILE = 'config.json'
# Fields that may change between runs in one workdir: they do not change what is computed.
MUTABLE_FIELDS = ('log_every_steps', 'data_dir', 'manual_dir', 'nan_policy')


class WorkdirConfigError(ValueError):
  pass


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """JSON-compatible dict of `config` (tuples become lists)."""
  return json.loads(config.to_json())


def _flatten(d: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_differences(stored: dict, current: dict) -> list[str]:
  """'field: stored vs current' lines for every differing field (ignoring MUTABLE_FIELDS)."""
  a, b = _flatten(stored), _flatten(current)
  lines = []
  for key in sorted(set(a) | set(b)):
    if key in MUTABLE_FIELDS:
      continue
    if a.get(key, '<absent>') != b.get(key, '<absent>'):
      lines.append(f'{key}: {a.get(key, "<absent>")!r} (workdir) vs {b.get(key, "<absent>")!r} (now)')
  return lines


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON to `path` via a temporary file and a rename (never a half-written file)."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def check_or_store_config(workdir: str, config: ml_collections.ConfigDict, *,
                          write: bool = True) -> None:
  """Stores `config` in `workdir/config.json`, or checks it equals the one stored there.

  Args:
    workdir: the run directory (created if missing when `write`).
    config: the run's config.
    write: False on processes other than 0 (they only check).
  Raises:
    WorkdirConfigError: the workdir was created by a different config.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = config_to_dict(config)
  if os.path.exists(path):
    with open(path) as f:
      try:
        stored = json.load(f)
      except ValueError as e:
        raise WorkdirConfigError(f'{path} is not valid JSON ({e}); delete it to reuse {workdir}')
    diffs = config_differences(stored, current)
    if diffs:
      raise WorkdirConfigError(
          f'workdir {workdir} was created by a different config; refusing to mix runs. '
          f'Use a new --workdir, or delete {workdir} to start over. Differences: ' + '; '.join(diffs))
    return
  if write:
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(path, current)
