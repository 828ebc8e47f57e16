"""Training clips resident on the device: the crops of docs/method.md §5 cut inside jitted code.

    place = functools.partial(parallel.host_batch_to_global, mesh=mesh, pairs=True, runs=True)
    inputs = on_device.device_inputs(loaders, mesh, place=place, replicate=parallel.replicate,
                                     stacked=True)
    for batch in inputs.batches(epoch, start_step):   # x float32 (K, B, T), y int32 (K, B)
      ...

The clips go to the devices once (`ClipTable`), the host sends a crop plan per step (`crop_plan`)
and `crops` cuts the batch: bitwise the host pipeline's without time scaling, within 1e-4 of a
sample with it (tests/test_on_device.py; how: docs/scaling.md "The training clips on the device").

Interpolation positions without float64 on the device: sample j of a crop reads the time-scaled
clip at ref = (offset - T//2 + j) / s = (k0 + sum_l d_l I_l) + (f0 + sum_l d_l F_l), with
(offset - T//2) / s = k0 + f0, 64^l / s = I_l + F_l and d_l the base-64 digits of j: the integer
part is exact in int32 and the fractional sum stays below 200, where float32 resolves 2e-5.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from intermix_jax import config_lib
from intermix_jax.data import augment

_DIGIT = 64  # base of the digits of a crop position j (see module docstring)


def crop_plan(clip_ids, lengths, labels, input_length: int, offsets_u: np.ndarray,
              scales: np.ndarray | None = None, gains: np.ndarray | None = None) -> dict:
  """Host side: what `crops` needs to cut the crops `augment.train_crops` would (R rows).

  Args:
    clip_ids: int (R,) the clips (positions in the loader's ClipIndex; `DeviceInputs` maps them
      to `ClipTable` rows); lengths: int (R,) their lengths in samples; labels: int (R,).
    input_length: T samples; offsets_u, scales, gains: as `augment.train_crops`.
  Returns:
    dict of numpy arrays with leading axis R: clip, length, n_out, offset int32; factor float32
    (gain / 32768); y int32; with `scales` also k0 int32, f0 float32, whole int32 (R, levels),
    frac float32 (R, levels) (module docstring).
  """
  t = int(input_length)
  n_out, offsets, factors = augment.crop_geometry(lengths, t, offsets_u, scales, gains)
  plan = dict(clip=np.asarray(clip_ids, np.int32), length=np.asarray(lengths, np.int32),
              n_out=n_out.astype(np.int32), offset=offsets.astype(np.int32), factor=factors,
              y=np.asarray(labels, np.int32))
  if scales is not None:
    scales = np.asarray(scales, np.float64)
    base = (offsets - t // 2) / scales
    k0 = np.floor(base)
    levels = max(1, -(-(t - 1).bit_length() // 6))  # base-64 (2^6) digits of positions 0..T-1
    steps = (float(_DIGIT) ** np.arange(levels))[None, :] / scales[:, None]
    whole = np.floor(steps)
    plan.update(k0=k0.astype(np.int32), f0=(base - k0).astype(np.float32),
                whole=whole.astype(np.int32), frac=(steps - whole).astype(np.float32))
  return plan


def crops(table: jax.Array, plan: dict, *, input_length: int) -> dict:
  """Device side: the crops of `plan` (any leading shape S, e.g. (B,) or (K, B)).

  Args:
    table: int16 (N, L) clips, zero beyond each clip's length (`ClipTable`).
    plan: `crop_plan` arrays with leading shape S, `clip` rows of `table`.
    input_length: T samples (static).
  Returns:
    dict(x=float32 S + (T,): crop / 32768 * gain, y=int32 S).
  """
  t = int(input_length)
  j = jnp.arange(t, dtype=jnp.int32)
  clip = plan['clip'][..., None]
  i = plan['offset'][..., None] - t // 2 + j        # position in the (time-scaled) clip
  valid = (i >= 0) & (i < plan['n_out'][..., None])
  last = plan['length'][..., None] - 1
  if 'k0' not in plan:
    values = table[clip, jnp.clip(i, 0, last)].astype(jnp.float32)
  else:
    whole = plan['k0'][..., None]
    frac = plan['f0'][..., None]
    for level in range(plan['whole'].shape[-1]):
      digit = (j // _DIGIT ** level) % _DIGIT
      whole = whole + digit * plan['whole'][..., level, None]
      frac = frac + digit.astype(jnp.float32) * plan['frac'][..., level, None]
    floor = jnp.floor(frac)
    ref1 = whole + floor.astype(jnp.int32)
    # ref = 0 exactly (the clip's first sample) may round to just below it: read sample 0.
    r = jnp.where(ref1 < 0, jnp.float32(0), frac - floor)
    ref1 = jnp.clip(ref1, 0, last)
    ref2 = jnp.minimum(ref1 + 1, last)
    lo = table[clip, ref1].astype(jnp.float32)
    values = lo + (table[clip, ref2].astype(jnp.float32) - lo) * r
  x = jnp.where(valid, values * plan['factor'][..., None], jnp.float32(0))
  return dict(x=x, y=plan['y'])


class ClipTable:
  """The distinct clips of some ClipIndexes as one int16 (N, L) array (host side), keyed by file
  name: a name twice in one index, or with two lengths, is a ValueError (never a silent merge).

  Attributes:
    clips: int16 (N, L), zero beyond each clip; rows: one int32 array per index given, mapping
      its positions to rows of `clips`; nbytes: bytes of `clips`.
  """

  def __init__(self, clips: np.ndarray, rows: list[np.ndarray]):
    self.clips, self.rows = clips, rows
    self.nbytes = int(clips.nbytes)

  @classmethod
  def from_indexes(cls, indexes: Sequence) -> 'ClipTable':
    """Reads every clip of `indexes` (pipeline.ClipIndex) once."""
    where: dict[str, tuple[int, int]] = {}  # file name -> (row, length)
    rows = []
    for index in indexes:
      if len(set(index.filenames)) != len(index):
        raise ValueError(f'{len(index) - len(set(index.filenames))} file name(s) appear twice '
                         'among the training clips; clips on the device are keyed by name')
      r = np.empty(len(index), np.int32)
      for p, (name, n) in enumerate(zip(index.filenames, index.lengths)):
        r[p], length = where.setdefault(name, (len(where), int(n)))
        if length != int(n):
          raise ValueError(f'clip {name!r} appears with {length} and {int(n)} '
                           'samples in the training folds of the runs')
      rows.append(r)
    lengths = [length for _, length in where.values()]  # in row order
    table = np.zeros((len(lengths), max(lengths, default=1)), np.int16)
    filled = np.zeros(len(lengths), bool)
    for index, r in zip(indexes, rows):
      todo = np.flatnonzero(~filled[r])
      for p, clip in zip(todo, index.read(todo)):
        table[r[p], :clip.shape[0]] = clip
        filled[r[p]] = True
    return cls(table, rows)


def device_memory_bytes(devices=None) -> int | None:
  """Bytes of memory of the first device (None where the backend does not say, e.g. CPU)."""
  device = (devices or jax.local_devices())[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without the query)
    return None
  return None if not stats else stats.get('bytes_limit')


class DeviceInputs:
  """The training batches of one or K runs (their TrainLoaders), cut on the device from `table`
  (placed once): `batch(epoch, step)` is the host batch once `place`d on the mesh; the trainer
  uses `batches` (placed plans) and `fuse(train_step)` (crops + step in one jitted program).
  """

  def __init__(self, loaders: Sequence, rows: list[np.ndarray], table: jax.Array, *,
               place: Callable, stacked: bool):
    if not stacked and len(loaders) != 1:
      raise ValueError(f'one loader without stacking, got {len(loaders)}')
    self.loaders, self.rows, self.stacked = list(loaders), rows, stacked
    self.steps_per_epoch = min(l.steps_per_epoch for l in self.loaders)
    self.table, self._place = table, place
    self._crops = functools.partial(crops, input_length=self.loaders[0].input_length)
    self._cut = None

  def plan(self, epoch: int, step: int):
    """The placed crop plan of `step` (rows mapped into the table)."""
    plans = []
    for loader, rows in zip(self.loaders, self.rows):
      p = loader.plan(epoch, step)
      p['clip'] = rows[p['clip']]
      plans.append(p)
    return self._place(plans if self.stacked else plans[0])

  def batch(self, epoch: int, step: int) -> dict:
    plan = self.plan(epoch, step)
    if self._cut is None:
      sharding = plan['clip'].sharding
      self._cut = jax.jit(self._crops, out_shardings=dict(x=sharding, y=sharding))
    return self._cut(self.table, plan)

  def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
    """The placed plans of steps start_step..steps_per_epoch-1 of `epoch`, for `fuse`."""
    return (self.plan(epoch, s) for s in range(start_step, self.steps_per_epoch))

  def fuse(self, train_step: Callable) -> Callable:
    """`step(state, plan, key)`: `train_step(state, batch, key)` on the batch cut from `plan`,
    in one jitted program (the state donated, the table an argument, never a constant)."""
    fused = jax.jit(
        lambda state, table, plan, key: train_step(state, self._crops(table, plan), key),
        donate_argnums=0)
    return lambda state, plan, key: fused(state, self.table, plan, key)


def device_inputs(loaders: Sequence, mesh, *, place: Callable, replicate: Callable,
                  stacked: bool) -> DeviceInputs:
  """`DeviceInputs` over one table of the loaders' clips (read once, `replicate`d on `mesh`'s
  devices), after checking that the table fits: config_lib.ConfigError (one line) when it needs
  over half of a device's memory. `place`: a host crop plan (a list of K with `stacked`) -> the
  same on the mesh, as a host batch is placed."""
  table = ClipTable.from_indexes([loader.index for loader in loaders])
  limit = device_memory_bytes(list(mesh.devices.flat))
  if limit and table.nbytes > limit // 2:
    raise config_lib.ConfigError(
        f'config.data_on_device=True: the {table.clips.shape[0]} training clips take '
        f'{_size(table.nbytes)} as int16 on every device, over half of its {_size(limit)}; set '
        'config.data_on_device=False (the host pipeline)')
  return DeviceInputs(loaders, table.rows, replicate(table.clips, mesh), place=place,
                      stacked=stacked)


def _size(nbytes: int) -> str:
  return f'{nbytes / 2**30:.2f} GiB' if nbytes >= 2**30 else f'{nbytes / 2**20:.1f} MiB'
