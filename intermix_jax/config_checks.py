"""Checks every config field before any heavy work, with one-line errors naming field and valid values.

    validate(config)                                    # names, ranges, types (no other module needed)
    validate(config, num_folds=5, num_mix_points=6,     # + fold range, mix points of the backbone,
             device_count=8, process_count=2)           #   batch divisibility

Raises `ConfigError` (a ValueError) with a message such as
    config.fold=7 is out of range for dataset 'esc50'; valid: 1..5 or 'all'
"""
from __future__ import annotations

import numbers

import ml_collections

DATASETS = ('esc50', 'esc10', 'urbansound8k', 'synthetic')
BACKBONES = ('envnet', 'envnetv2', 'm18', 'soundnet5', 'piczakcnn')
STRATEGIES = ('standard', 'mixup', 'bc', 'speechmix', 'intermix')
SIGNED_MODES = ('superpose', 'clamp')
NAN_POLICIES = ('stop', 'skip')
CONV_IMPLS = ('auto', 'plain', 'cpu')
KNOWN_NUM_FOLDS = {'esc50': 5, 'esc10': 5, 'urbansound8k': 10}


class ConfigError(ValueError):
  """A config field has a value the trainer cannot use (message names the field)."""


def _names(kind: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
  """The names the project's registries accept for `kind` ('dataset', 'backbone', 'strategy')."""
  if kind == 'dataset':
    from intermix_jax import data
    return tuple(data.DATASETS)
  if kind == 'strategy':
    from intermix_jax import mixing
    return tuple(mixing.STRATEGY_NAMES)
  try:
    from intermix_jax import models
  except ImportError:  # the models package is not importable yet
    return fallback
  return tuple(getattr(models, 'MODELS', None) or fallback)


def _fail(msg: str):
  raise ConfigError(msg)


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_choice(field: str, value, valid) -> None:
  if value not in valid:
    _fail(f'config.{field}={value!r} is not supported; valid: {", ".join(map(str, valid))}')


def _check_range(field: str, value, *, lo=None, hi=None, integer=False, lo_open=False,
                 hi_open=False) -> None:
  lo_s = '' if lo is None else (f'> {lo}' if lo_open else f'>= {lo}')
  hi_s = '' if hi is None else (f'< {hi}' if hi_open else f'<= {hi}')
  valid = ('integers ' if integer else 'numbers ') + ' and '.join(x for x in (lo_s, hi_s) if x)
  ok_type = _is_int(value) if integer else _is_real(value)
  if not ok_type:
    _fail(f'config.{field}={value!r} must be {"an integer" if integer else "a number"}; '
          f'valid: {valid.strip()}')
  bad = ((lo is not None and (value <= lo if lo_open else value < lo)) or
         (hi is not None and (value >= hi if hi_open else value > hi)))
  if bad:
    _fail(f'config.{field}={value!r} is out of range; valid: {valid.strip()}')


def validate(config: ml_collections.ConfigDict, *, num_folds: int | None = None,
             num_mix_points: int | None = None, device_count: int | None = None,
             process_count: int | None = None, mixes: bool | None = None) -> None:
  """Raises ConfigError for the first unusable field; the optional facts enable more checks.

  Args:
    config: the run config.
    num_folds: folds of the dataset (default: known for esc50/esc10/urbansound8k).
    num_mix_points: K of the backbone (eligible layers must be in 0..K-1).
    device_count: global device count (the batch is split over devices).
    process_count: number of processes (each feeds batch_size / process_count sounds).
    mixes: whether the strategy mixes pairs (default: strategy != 'standard').
  """
  c = config
  _check_choice('dataset', c.dataset, _names('dataset', DATASETS))
  _check_choice('backbone', c.backbone, _names('backbone', BACKBONES))
  _check_choice('strategy', c.strategy, _names('strategy', STRATEGIES))
  if mixes is None:
    mixes = c.strategy != 'standard'

  folds = num_folds if num_folds is not None else KNOWN_NUM_FOLDS.get(c.dataset)
  if c.fold != 'all':
    if not _is_int(c.fold):
      _fail(f'config.fold={c.fold!r} must be a fold number; valid: '
            f'{f"1..{folds}" if folds else "integers >= 1"} or \'all\'')
    if c.fold < 1 or (folds is not None and c.fold > folds):
      valid = f'1..{folds}' if folds else 'a fold number >= 1'
      _fail(f'config.fold={c.fold!r} is out of range for dataset {c.dataset!r}; valid: {valid} or \'all\'')

  _check_range('model.width', c.model.width, lo=0, lo_open=True)
  if c.model.get('fc_units') is not None:
    _check_range('model.fc_units', c.model.fc_units, lo=1, integer=True)
  if 'conv_impl' in c.model:
    _check_choice('model.conv_impl', c.model.conv_impl, CONV_IMPLS)

  m = c.mixing
  _check_choice('mixing.signed_mode', m.signed_mode, SIGNED_MODES)
  _check_range('mixing.alpha', m.alpha, lo=0, lo_open=True)
  for field in ('p_weighting', 'normalize', 'stop_gradient_interference'):
    if not isinstance(m[field], bool):
      _fail(f'config.mixing.{field}={m[field]!r} must be a bool; valid: True, False')
  if m.eligible_layers is not None:
    layers = tuple(m.eligible_layers)
    if not layers:
      _fail('config.mixing.eligible_layers=() is empty; valid: at least one mix point, or None '
            '(the strategy default)')
    for k in layers:
      if not _is_int(k) or k < 0 or (num_mix_points is not None and k >= num_mix_points):
        valid = (f'0..{num_mix_points - 1}' if num_mix_points is not None else 'integers >= 0')
        _fail(f'config.mixing.eligible_layers={layers!r}: {k!r} is not a mix point of backbone '
              f'{c.backbone!r}; valid: {valid}')

  _check_range('batch_size', c.batch_size, lo=1, integer=True)
  if mixes and c.batch_size % 2:
    _fail(f'config.batch_size={c.batch_size} must be even for strategy {c.strategy!r} (pairs of '
          f'sounds); valid: even numbers >= 2')
  if process_count and c.batch_size % process_count:
    _fail(f'config.batch_size={c.batch_size} is not divisible by the {process_count} processes; '
          f'valid: multiples of {process_count}')
  if device_count:
    if c.batch_size % device_count:
      _fail(f'config.batch_size={c.batch_size} is not divisible by the {device_count} devices; '
            f'valid: multiples of {device_count}')
    if mixes and (c.batch_size // device_count) % 2:
      _fail(f'config.batch_size={c.batch_size} gives {c.batch_size // device_count} sounds per device; '
            f'mixing pairs sounds on each device, valid: multiples of {2 * device_count}')
  _check_range('eval_batch_size', c.eval_batch_size, lo=1, integer=True)
  for n, what in ((device_count, 'devices'), (process_count, 'processes')):
    if n and c.eval_batch_size % n:
      _fail(f'config.eval_batch_size={c.eval_batch_size} is not divisible by the {n} {what}; '
            f'valid: multiples of {n}')
  _check_range('num_eval_crops', c.num_eval_crops, lo=1, integer=True)

  _check_range('num_epochs', c.num_epochs, lo=1, integer=True)
  if not isinstance(c.double_epochs_for_mixing, bool):
    _fail(f'config.double_epochs_for_mixing={c.double_epochs_for_mixing!r} must be a bool; '
          'valid: True, False')
  _check_range('opt.lr', c.opt.lr, lo=0, lo_open=True)
  _check_range('opt.momentum', c.opt.momentum, lo=0, hi=1, hi_open=True)
  _check_range('opt.weight_decay', c.opt.weight_decay, lo=0)
  if not isinstance(c.opt.nesterov, bool):
    _fail(f'config.opt.nesterov={c.opt.nesterov!r} must be a bool; valid: True, False')
  sched = tuple(c.opt.schedule)
  if any(not _is_real(f) or not 0 < f <= 1 for f in sched) or list(sched) != sorted(sched):
    _fail(f'config.opt.schedule={sched!r} is not usable; valid: increasing fractions in (0, 1], '
          'e.g. (0.5, 0.75)')
  _check_range('opt.warmup_epochs', c.opt.warmup_epochs, lo=0, integer=True)

  _check_range('seed', c.seed, lo=0, integer=True)
  _check_range('eval_every_epochs', c.eval_every_epochs, lo=1, integer=True)
  _check_range('checkpoint_every_epochs', c.checkpoint_every_epochs, lo=1, integer=True)
  _check_range('keep_checkpoints', c.keep_checkpoints, lo=1, integer=True)
  _check_range('log_every_steps', c.log_every_steps, lo=1, integer=True)
  _check_choice('nan_policy', c.nan_policy, NAN_POLICIES)
  if c.steps_per_epoch is not None:
    _check_range('steps_per_epoch', c.steps_per_epoch, lo=1, integer=True)
  if c.shuffle_buffer_seed is not None:
    _check_range('shuffle_buffer_seed', c.shuffle_buffer_seed, lo=0, integer=True)
