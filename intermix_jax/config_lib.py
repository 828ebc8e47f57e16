"""The experiment config: every field declared once (`SECTIONS`), and how a config file builds it.

Config files (configs/*.py) are thin, in big_vision's style:

    def get_config(arg=None):
      return config_lib.experiment(arg, dataset='esc10')
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import numbers
from typing import Any

import ml_collections
from ml_collections.config_flags import config_flags as _ml_config_flags

from intermix_jax import protocol
from intermix_jax import workdir


class ConfigError(ValueError):
  """A config field has a value the trainer cannot use (the message, one line, names it)."""


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field, declared once.

  Attributes:
    key: dotted name ('opt.lr'); the part before a dot is a sub-config.
    description: one line: what the field does, its unit and its valid values.
    field_type: the ml_collections type where the default does not tell it (a default of None;
      fold: a number or 'all', so `object`); None: the default's own type.
  """
  key: str
  default: Any
  description: str
  field_type: type | None = None


SECTIONS = (
    ('what to train (the declared arguments of `SPEC` set dataset, fold, backbone, strategy)', (
        Field('dataset', 'esc50', 'a name of data.catalog.DATASETS'),
        Field('fold', 1, "test fold (1-based; the other folds train), or 'all': every fold, each "
              'into workdir/fold_k', object),
        Field('stack_runs', False, "fold='all' or several seeds only: True trains every run in ONE "
              'program, stacked on a run axis (multirun.py); each run still writes its own workdir '
              'as if alone'),
        Field('stack_method', 'auto', "how runs are stacked: 'vmap' (one wide step), 'unroll' (each "
              "run's own step) or 'auto' (unroll on CPU devices, vmap on accelerators for the "
              'backbones measured to gain: multirun.resolve_method)'),
        Field('backbone', 'envnetv2', 'a name of models.MODELS'),
        Field('model.width', 1.0, 'channel multiplier of every conv layer (1.0 = the published '
              'model); options of models.get_model(**config.model)'),
        Field('model.fc_units', None, 'hidden FC width in units, where the backbone has hidden FC '
              'layers; None = the published width', int),
        Field('model.precision', 'float32', "'float32' | 'bfloat16' conv/dense compute; parameters "
              'stay float32'),
        Field('strategy', 'intermix', 'a name of mixing.STRATEGY_NAMES'),
        Field('mixing.eligible_layers', None, 'mix points (0 = the input) a step draws its layer '
              "from; None: the strategy's default; options of mixing.get_strategy(**config.mixing)",
              tuple),
        Field('mixing.p_weighting', True, "bc/speechmix/intermix: mix with BC's p from the "
              'A-weighted levels of the sounds; False mixes with the ratio r itself'),
        Field('mixing.normalize', True, 'intermix: divide by sqrt(p^2 + (1-p)^2) (the paper); False '
              'reproduces the reference code'),
        Field('mixing.signed_mode', 'superpose', "intermix on signed tensors (the waveform): "
              "'superpose' (drop the interference term) | 'clamp' (sqrt(max(h_i h_j, 0)))"),
        Field('mixing.stop_gradient_interference', False, 'intermix: detach the interference term '
              '(as the reference code does)'),
        Field('mixing.alpha', 1.0, "mixup's Beta(alpha, alpha) parameter (> 0)"),
        Field('mixing.pairing', None, "'shared' (each pair of sounds mixed both ways) | "
              "'independent' (each mixture its own pair; input mixing only); None: the strategy's "
              'default (bc independent, the others shared)', str),
        Field('strong_augment', False, 'time scale in [0.8, 1.25] and gain in [-6, 6] dB per sound'),
    )),
    ('data', (
        Field('data_dir', None, 'TFDS data dir: where prepared datasets are written (None: '
              '~/tensorflow_datasets)', str),
        Field('manual_dir', None, "a local copy of the dataset's official layout (None: TFDS's "
              'manual dir, else the download)', str),
        Field('skip_bad_files', False, 'skip unreadable audio with a warning and a count instead of '
              'failing'),
        Field('data_on_device', False, 'True: the training clips (int16) live on the devices and '
              'the crops, time scale and gain are cut there (data/on_device.py); for accelerators'),
        Field('num_eval_crops', 10, 'crops per test clip (the softmax is averaged over them)'),
        Field('eval_batch_size', 16, 'clips per eval batch (each clip = num_eval_crops crops)'),
        Field('shuffle_buffer_seed', None, 'seed of the data order and augmentation; None: seed',
              int),
    )),
    ('optimisation (docs/method.md §5; `experiment` sets the row of backbone and dataset)', (
        Field('batch_size', 64, 'global batch in sounds (32 pairs when mixing)'),
        Field('num_epochs', 1000, 'epochs of standard training; mixing strategies double it '
              '(double_epochs_for_mixing)'),
        Field('double_epochs_for_mixing', True, 'mixing strategies train 2 x num_epochs (the '
              'schedule fractions scale, the warm-up does not)'),
        Field('opt.lr', 0.1, 'LR0, the base learning rate of SGD'),
        Field('opt.momentum', 0.9, 'SGD momentum'),
        Field('opt.nesterov', True, 'Nesterov momentum'),
        Field('opt.weight_decay', 5e-4, 'coupled L2 on all parameters (added to the gradient)'),
        Field('opt.schedule', (0.3, 0.6, 0.9), 'fractions of the epochs trained after which the LR '
              'is multiplied by 0.1'),
        Field('opt.warmup_epochs', 10, 'first epochs at LR0 * 0.1 (not doubled for mixing)'),
        Field('opt_defaults_from', '', "'<backbone>/<dataset>' whose docs/method.md §5 row set the "
              "optimisation fields ('' = none); set by `experiment`"),
    )),
    ('bookkeeping', (
        Field('seed', 0, 'seed of the initialisation, the mixing draws and (shuffle_buffer_seed '
              'None) the data'),
        Field('seeds', None, 'None: one run of `seed`; a tuple, e.g. (0,1,2): one run per seed in '
              'workdir/seed_<s>, summarised in workdir/seeds_results.json', tuple),
        Field('eval_every_epochs', 50, 'epochs between test-fold evaluations (and after the last)'),
        Field('checkpoint_every_epochs', 10, 'epochs between checkpoints'),
        Field('keep_checkpoints', 3, 'checkpoints kept (older ones are deleted)'),
        Field('log_every_steps', 50, 'steps between progress lines and metrics'),
        Field('nan_policy', 'stop', "'stop' | 'skip' (skip non-finite steps, counted in metrics)"),
        Field('steps_per_epoch', None, 'optimiser steps per epoch; None: from the data (every full '
              'batch)', int),
    )),
)
FIELDS = tuple(f for _, fields in SECTIONS for f in fields)


def base_config() -> ml_collections.ConfigDict:
  """Every field (`FIELDS`) and its default."""
  tree = {}
  for f in FIELDS:
    *path, name = f.key.split('.')
    functools.reduce(lambda node, part: node.setdefault(part, {}), path, tree)[name] = (
        f.default if f.field_type is None else
        ml_collections.FieldReference(f.default, field_type=f.field_type))
  return ml_collections.ConfigDict(tree)


# The Fields config files declared as their own arguments (`experiment(arg, audio_dir=Field(...))`),
# by key: `describe` finds their descriptions here.
_FILE_FIELDS: dict[str, Field] = {}


def describe(config: ml_collections.ConfigDict | None = None) -> str:
  """Every leaf field of `config` (default: `base_config()`) as 'key = value  # description',
  under '# --- <section>' lines: the `SECTIONS`, then the config file's own fields."""
  config = base_config() if config is None else config
  values = {key: config[key] for key in valid_keys(config)}
  sections = [(title, [f for f in fields if f.key in values]) for title, fields in SECTIONS]
  known = {f.key for _, fields in sections for f in fields}
  own = [_FILE_FIELDS.get(key, Field(key, None, '(no description: not declared as a Field)'))
         for key in values if key not in known]
  sections.append(('fields of this config file', own))
  blocks = [[f'# --- {title}'] + [f'{f.key} = {values[f.key]!r}  # {f.description}' for f in fields]
            for title, fields in sections if fields]
  return '\n\n'.join('\n'.join(block) for block in blocks) + '\n'


# The declared arguments of every config file (their defaults and types: their `Field`s).
SPEC = ('dataset', 'backbone', 'strategy', 'fold', 'seed')


def experiment(arg: str | None = None, *, fields: dict[str, Any] | None = None,
               **spec) -> ml_collections.ConfigDict:
  """The config of a config file.

  What applies in which order: docs/config.md "How configs are built".

  Args:
    arg: the text after the colon of `--config=configs/x.py:ARG` (None or '' for none).
    fields: the file's own settings by dotted key (`{'model.width': 0.25}`).
    **spec: the file's defaults of the declared arguments (`dataset='esc10'`) and arguments of
      its own, added as config fields: a `Field`, a default, or a (default, type) pair.
  Raises:
    ValueError: one line naming the item: not key=value, an unknown field, a wrong type.
  """
  c = base_config()
  for name, entry in spec.items():
    if isinstance(entry, Field):
      _FILE_FIELDS[name] = entry
      entry = (entry.default, entry.field_type or type(entry.default))
    default, ftype = entry if isinstance(entry, tuple) else (entry, type(entry))
    c[name] = default if name in c else ml_collections.FieldReference(default, field_type=ftype)
  items = [tuple(t.strip() for t in item.split('=', 1)) for item in split_top_level(arg or '')]
  for i, item in enumerate(items):
    if len(item) == 1:
      raise ValueError(f'config override {item[0]!r} is not key=value (in {arg!r})' +
                       _comma_hint(items, i))
  declared = set(SPEC) | set(spec)
  for key, raw in items:
    if key in declared:
      set_field(c, key, parse_field(c, key, raw))
  row = protocol.optimisation_row(c.backbone, c.dataset)
  if row is not None:  # None: an unknown backbone, which config_checks names
    c.num_epochs, c.opt.lr = row['num_epochs'], row['lr']
    c.opt.schedule, c.opt.warmup_epochs = row['schedule'], row['warmup_epochs']
    c.opt_defaults_from = f'{c.backbone}/{protocol.row_dataset(c.dataset)}'
  overrides = {key: parse_field(c, key, raw) for key, raw in items if key not in declared}
  for key, value in {**(fields or {}), **overrides}.items():  # typed before `fields` are set
    set_field(c, key, value)
  return c


def row_note(config: ml_collections.ConfigDict) -> str | None:
  """A warning when the backbone or dataset changed after `experiment` chose the protocol row
  (`--config.backbone=...`), else None."""
  chosen = config.get('opt_defaults_from')
  if not chosen or chosen == f'{config.backbone}/{protocol.row_dataset(config.dataset)}':
    return None
  return (f'config.backbone={config.backbone} / dataset={config.dataset}, but the optimisation '
          f'fields came from the docs/method.md §5 row of {chosen}: to get the row of this '
          'backbone and dataset, give them after the colon (configs/x.py:backbone=...), not as '
          '--config.backbone')


# --- the text after the colon --------------------------------------------------------------------
def split_top_level(text: str, sep: str = ',') -> list[str]:
  """Splits `text` at `sep` characters that are not inside (), [] or {} and not inside quotes."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{)]}':
      depth += 1 if ch in '([{' else -1
    elif ch == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts if p.strip()]


def _comma_hint(items: list[tuple[str, ...]], i: int) -> str:
  """For a bare (text,) item after a (key, value) one: the value probably held commas; quote it."""
  if i == 0 or len(items[i - 1]) == 1:
    return ''
  key, value = items[i - 1]
  rest = [text for text, in itertools.takewhile(lambda item: len(item) == 1, items[i:])]
  quoted = f'{key}="{",".join([value, *rest])}"'
  return (f'; commas separate overrides, so quote a value that holds commas: {quoted} (and keep '
          f"the quotes from the shell: --config='configs/x.py:{quoted}')")


def _leaf(config: ml_collections.ConfigDict, key: str):
  """(parent ConfigDict, name) of the dotted leaf field `key`; ValueError listing the valid ones."""
  keys = valid_keys(config)
  if key not in keys:
    raise ValueError(f'unknown config field {key!r}; valid fields: {", ".join(keys)}')
  parent, _, name = key.rpartition('.')
  return (config[parent] if parent else config), name


def valid_keys(config: ml_collections.ConfigDict) -> list[str]:
  """Every leaf field of `config` as a dotted key, sorted."""
  return sorted(workdir.flat_config(config.to_dict()))


def parse_field(config: ml_collections.ConfigDict, key: str, raw: str) -> Any:
  """The text `raw` as a value of the dotted field `key` of `config`, parsed as
  `--config.<key>=raw` is (ml_collections' parser of the field's type, else of `object`: a Python
  literal or the text; a quoted text is unquoted; 'None' for a field that may be None);
  ValueError naming the field otherwise."""
  node, name = _leaf(config, key)
  ftype = node.get_ref(name).get_type()
  ftype = object if ftype is type(None) else ftype
  text = raw.strip()
  if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]
  if text in ('None', 'none', 'null') and (node[name] is None or ftype is object):
    return None
  parsers = _ml_config_flags._FIELD_TYPE_TO_PARSER  # pylint: disable=protected-access
  try:
    return parsers.get(ftype, parsers[object]).parse(text)
  except ValueError:
    raise ValueError(f'config field {key!r} expects {ftype.__name__}, got {raw!r}') from None


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets the dotted field `key` (which must exist) to `value` (ml_collections' type rules)."""
  node, name = _leaf(config, key)
  try:
    node[name] = tuple(value) if isinstance(value, list) else value
  except TypeError as e:
    raise ValueError(f'config field {key!r}: {e}') from None


# --- the batch rule ------------------------------------------------------------------------------
def check_batch_split(batch_size, *, pairs: bool, processes: int | None = None,
                      devices: int | None = None, field: str = 'batch_size') -> None:
  """The one rule for cutting a batch of sounds, wherever it is cut (config checks, data loaders).

  ConfigError (one line naming config.<field>) unless `batch_size` is an integer >= 1 that splits
  evenly over the processes and over the devices, into whole pairs (rows 2k, 2k+1) on each of
  them when `pairs` (every mixing strategy).
  """
  b = batch_size
  if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1:
    raise ConfigError(f'config.{field}={b!r} is not a positive integer; valid: integers >= 1')
  if pairs and b % 2:
    raise ConfigError(f'config.{field}={b} must be even: mixing strategies train on pairs of '
                      'sounds; valid: even numbers >= 2')
  for n, many, one in ((processes, 'processes', 'process'), (devices, 'devices', 'device')):
    if n and b % n:  # n = 1 passes both: b is even where pairs are cut (checked above)
      raise ConfigError(f'config.{field}={b} is not divisible by the {n} {many}; valid: '
                        f'multiples of {2 * n if pairs else n}')
    if n and pairs and (b // n) % 2:
      raise ConfigError(f'config.{field}={b} gives {b // n} sounds per {one}; mixing pairs sounds '
                        f'on each {one}, valid: multiples of {2 * n}')
