"""Checks a config before any heavy work (`validate`): one-line `ConfigError`s (a ValueError)
naming the field and the valid values, e.g.
    config.fold=7 is out of range for dataset 'esc50'; valid: 1..5 or 'all'
"""
from __future__ import annotations

import numbers

import ml_collections

from intermix_jax import config_lib
from intermix_jax import mixing
from intermix_jax import models
from intermix_jax import multirun
from intermix_jax import schedules
from intermix_jax.data import catalog

ConfigError = config_lib.ConfigError
NAN_POLICIES = ('stop', 'skip')
# Integer fields and their minimum (steps_per_epoch and shuffle_buffer_seed may be None).
_INTEGER_FIELDS = (('num_eval_crops', 1), ('num_epochs', 1), ('opt.warmup_epochs', 0), ('seed', 0),
                   ('eval_every_epochs', 1), ('checkpoint_every_epochs', 1),
                   ('keep_checkpoints', 1), ('log_every_steps', 1), ('steps_per_epoch', 1),
                   ('shuffle_buffer_seed', 0))


def _fail(msg: str):
  raise ConfigError(msg)


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_choice(field: str, value, valid) -> None:
  if value not in valid:
    _fail(f'config.{field}={value!r} is not supported; valid: {", ".join(map(str, valid))}')


def _check_range(field: str, value, *, lo, integer=False, lo_open=False, hi=None) -> None:
  """A number >= lo (> lo when `lo_open`) and < hi (an exclusive bound; None: none)."""
  valid = (('integers ' if integer else 'numbers ') + (f'> {lo}' if lo_open else f'>= {lo}') +
           ('' if hi is None else f' and < {hi}'))
  if not (_is_int(value) if integer else _is_real(value)):
    _fail(f'config.{field}={value!r} must be {"an integer" if integer else "a number"}; '
          f'valid: {valid}')
  if value < lo or (lo_open and value == lo) or (hi is not None and value >= hi):
    _fail(f'config.{field}={value!r} is out of range; valid: {valid}')


def _check_bool(field: str, value) -> None:
  if not isinstance(value, bool):
    _fail(f'config.{field}={value!r} must be a bool; valid: True, False')


def _check_option(field: str, value, make, /, *args, **kwargs):
  """`make(*args, **kwargs)`, a component built with this option: its constructor's ValueError
  becomes one ConfigError naming config.<field>."""
  try:
    return make(*args, **kwargs)
  except ValueError as e:
    _fail(f'config.{field}={value!r}: {e}')


def _check_components(c):
  """The model and mixing options, each alone first (the error names its field; a mixing option
  the strategy does not use by a strategy that uses it), by their constructors; returns the
  run's strategy."""
  for name, value in c.model.items():  # the class count does not bear on the options
    _check_option(f'model.{name}', value, models.get_model, c.backbone, 2, **{name: value})
  _check_option('model', dict(c.model), models.get_model, c.backbone, 2, **c.model)
  used = mixing.strategy_options(c.strategy)
  for name, value in c.mixing.items():
    users = [s for s in mixing.STRATEGY_NAMES if name in mixing.strategy_options(s)]
    owner = c.strategy if name in used or not users else users[0]
    options = {name: value}
    if name == 'pairing' and 'eligible_layers' in mixing.strategy_options(owner):
      options['eligible_layers'] = c.mixing.eligible_layers  # independent pairs need (0,)
    _check_option(f'mixing.{name}', value, mixing.get_strategy, owner, **options)
  options = {name: c.mixing[name] for name in used}
  return _check_option('mixing', options, mixing.get_strategy, c.strategy, **options)


def validate(config: ml_collections.ConfigDict, *, num_folds: int | None = None,
             num_mix_points: int | None = None, device_count: int | None = None,
             process_count: int | None = None, mixes: bool | None = None) -> None:
  """Raises ConfigError for the first unusable field; the optional facts enable more checks.

  Args:
    num_folds: folds of the dataset (default: the data catalog's, where it knows them without
      reading the data; a 'custom' dataset's are checked by its loaders).
    num_mix_points: K of the backbone (eligible layers must be in 0..K-1).
    device_count: global device count (the batch is split over devices).
    process_count: number of processes (each feeds batch_size / process_count sounds).
    mixes: whether the strategy mixes pairs (default: the strategy's own).
  """
  c = config
  _check_choice('dataset', c.dataset, catalog.DATASETS)
  _check_choice('backbone', c.backbone, tuple(models.MODELS))
  _check_choice('strategy', c.strategy, mixing.STRATEGY_NAMES)
  strategy = _check_components(c)  # always: every option is checked
  mixes = strategy.mixes if mixes is None else mixes

  folds = num_folds if num_folds is not None else catalog.known_num_folds(c.dataset)
  valid = f"{f'1..{folds}' if folds else 'integers >= 1'} or 'all'"
  if c.fold != 'all' and not _is_int(c.fold):
    _fail(f'config.fold={c.fold!r} must be a fold number; valid: {valid}')
  if c.fold != 'all' and (c.fold < 1 or (folds is not None and c.fold > folds)):
    _fail(f'config.fold={c.fold!r} is out of range for dataset {c.dataset!r}; valid: {valid}')

  if num_mix_points is not None and c.mixing.eligible_layers is not None:
    layers = tuple(c.mixing.eligible_layers)
    for k in layers:
      if k >= num_mix_points:
        _fail(f'config.mixing.eligible_layers={layers!r}: {k!r} is not a mix point of backbone '
              f'{c.backbone!r}; valid: 0..{num_mix_points - 1}')

  config_lib.check_batch_split(c.batch_size, pairs=mixes, processes=process_count,
                               devices=device_count)
  config_lib.check_batch_split(c.eval_batch_size, pairs=False, processes=process_count,
                               devices=device_count, field='eval_batch_size')
  for field, lo in _INTEGER_FIELDS:
    if c[field] is not None or field not in ('steps_per_epoch', 'shuffle_buffer_seed'):
      _check_range(field, c[field], lo=lo, integer=True)
  _check_bool('double_epochs_for_mixing', c.double_epochs_for_mixing)
  _check_range('opt.lr', c.opt.lr, lo=0, lo_open=True)
  _check_range('opt.momentum', c.opt.momentum, lo=0, hi=1)
  _check_range('opt.weight_decay', c.opt.weight_decay, lo=0)
  _check_bool('opt.nesterov', c.opt.nesterov)
  sched = tuple(c.opt.schedule)
  if any(not _is_real(f) or not 0 < f <= 1 for f in sched) or list(sched) != sorted(sched):
    _fail(f'config.opt.schedule={sched!r} is not usable; valid: increasing fractions in (0, 1], '
          'e.g. (0.5, 0.75)')
  _check_choice('stack_method', c.get('stack_method', 'auto'), multirun.METHODS + ('auto',))
  _check_bool('data_on_device', c.get('data_on_device', False))
  if c.get('seeds') is not None:
    seeds = tuple(c.seeds)
    if not seeds or not all(_is_int(s) and s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
      _fail(f'config.seeds={seeds!r} must be distinct integers >= 0, e.g. (0,1,2), or None')
  _check_choice('nan_policy', c.nan_policy, NAN_POLICIES)


def schedule_note(config: ml_collections.ConfigDict) -> str | None:
  """A warning line if the LR schedule never runs at config.opt.lr (docs/method.md §5), or None."""
  c = config
  mixes = mixing.build_strategy(c).mixes
  n = schedules.total_epochs(c.num_epochs, mixes, c.double_epochs_for_mixing)
  warmup, sched, lr = int(c.opt.warmup_epochs), tuple(c.opt.schedule), c.opt.lr
  if schedules.epochs_at_base_lr(n, sched, warmup):
    return None
  trained = (f'the {n} epochs trained (config.num_epochs={c.num_epochs}'
             f'{", doubled for mixing" if n != c.num_epochs else ""})')
  if warmup >= n:
    return (f'config.opt.warmup_epochs={warmup} is not shorter than {trained}: every epoch runs '
            f'at the warm-up LR {lr * 0.1:g} (config.opt.lr * 0.1), never at config.opt.lr='
            f'{lr:g}; lower opt.warmup_epochs or raise num_epochs')
  first = min(n * f for f in sched)  # the first decay point, in epochs (epochs_at_base_lr: > 0)
  return (f'config.opt.schedule={sched} decays the LR after epoch {first:g} of {trained}, before '
          f'the first epoch past the config.opt.warmup_epochs={warmup} warm-up epochs: no epoch '
          f'runs at config.opt.lr={lr:g}; lower opt.warmup_epochs, raise num_epochs or move the '
          'first decay later')
