"""Training and evaluation input pipelines over the prepared TFDS data (no TensorFlow).

Batches: pure functions of (seed, epoch, step), served by grain; why, and the rules (epoch order,
pairs, crops, row and batch layout per process): data/README.md "Reading" and "Pipeline".
"""
import math
import threading
from typing import Iterator, Sequence

from absl import flags
import grain
import numpy as np

from intermix_jax import config_lib
from intermix_jax.data import augment
from intermix_jax.data import on_device
from intermix_jax.data import pairing

_ORDER_STREAM = 0x5EED0  # separate the epoch-order and the augmentation random streams
_AUGMENT_STREAM = 0xA06
MAX_TIME_SCALE = 1.25    # docs/method.md §5: time scale in [1/1.25, 1.25], log-uniform (ref. code)
MAX_GAIN_DB = 6.0        # docs/method.md §5: gain +-6 dB
_STREAM_LENGTH = 1 << 40  # global steps a background stream may run ahead to (never reached)
DEFAULT_CACHE_BYTES = 1 << 30  # keep a split's int16 clips in memory when they fit (1 GiB)


class ClipIndex:
  """Random access to the clips of some folds of a prepared dataset (every record read once;
  the clips kept in memory when their int16 samples total at most `cache_bytes`).

  Attributes:
    labels: int32 (N,); filenames: list of N str; lengths: int64 (N,) samples per clip;
    cached: whether the clips are in memory.
  """

  def __init__(self, sources: Sequence, *, sort_by_filename: bool = False,
               cache_bytes: int = DEFAULT_CACHE_BYTES, chunk: int = 64):
    """sources: tfds data sources (one per fold); sort_by_filename: order clips by name (default:
    fold, then record order); cache_bytes: memory budget for keeping the clips."""
    self.sources = list(sources)
    src, rec, labels, names, lengths, clips = [], [], [], [], [], []
    total = 0
    for s, source in enumerate(self.sources):
      n = len(source)
      for start in range(0, n, chunk):
        for r, ex in enumerate(source.__getitems__(list(range(start, min(n, start + chunk))))):
          src.append(s)
          rec.append(start + r)
          labels.append(int(ex['label']))
          name = ex['filename']
          names.append(name.decode('utf-8') if isinstance(name, bytes) else str(name))
          lengths.append(int(np.shape(ex['audio'])[0]))
          total += ex['audio'].nbytes
          if total <= cache_bytes:  # (never again once over: the total only grows)
            clips.append(np.asarray(ex['audio'], np.int16))
    order = sorted(range(len(names)), key=names.__getitem__ if sort_by_filename else None)
    self.source_of = np.asarray(src, np.int32)[order]
    self.record_of = np.asarray(rec, np.int64)[order]
    self.labels = np.asarray(labels, np.int32)[order]
    self.lengths = np.asarray(lengths, np.int64)[order]
    self.filenames = [names[i] for i in order]
    self.cached = total <= cache_bytes
    self._clips = [clips[i] for i in order] if self.cached else None

  def __getstate__(self):  # a copy sent to a grain worker process reads the files itself
    return dict(self.__dict__, _clips=None)

  def __len__(self):
    return self.labels.shape[0]

  def read(self, indices: Sequence[int]) -> list[np.ndarray]:
    """int16 audio arrays of clips `indices` (in that order), reading each source once."""
    if self._clips is not None:
      return [self._clips[i] for i in indices]
    indices = np.asarray(indices, np.int64)
    out = [None] * indices.shape[0]
    for s in np.unique(self.source_of[indices]):
      where = np.flatnonzero(self.source_of[indices] == s)
      examples = self.sources[s].__getitems__(self.record_of[indices[where]].tolist())
      for w, ex in zip(where, examples):
        out[w] = np.asarray(ex['audio'], np.int16)
    return out


def _iterate(dataset: grain.MapDataset, num_threads: int, prefetch: int, num_workers: int):
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags (defaults here)
      flags.FLAGS.mark_as_parsed()
    it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it)
  if num_threads > 0:
    return iter(dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(prefetch, 1))))
  return (dataset[i] for i in range(len(dataset)))


class TrainLoader:
  """Deterministic, resumable training batches (see module docstring).

  Attributes:
    steps_per_epoch: full global batches per epoch (same on every process; a partial one dropped).
    num_examples: training clips (train folds).
    local_batch_size: rows (sounds) per process batch.
    rows: sounds per global batch (batch_size x sounds_per_example).
  """

  def __init__(self, index: ClipIndex, *, input_length: int, batch_size: int, seed: int,
               pairs: bool, strong_augment: bool, process_index: int = 0,
               process_count: int = 1, num_threads: int = 1, prefetch: int = 2,
               num_workers: int = 0, class_names: Sequence[str] | None = None,
               sounds_per_example: int = 1):
    """`class_names` (index = label) only name a class in the pairing error below;
    `sounds_per_example` = the strategy's (2: independent pairs, `pairs` must be True)."""
    if sounds_per_example not in (1, 2) or (sounds_per_example == 2 and not pairs):
      raise ValueError(f'TrainLoader: sounds_per_example={sounds_per_example!r} must be 1, or 2 '
                       'with pairs=True (independent pairs)')
    _check_processes(batch_size, process_index, process_count, 'batch_size', pairs)
    self.independent = sounds_per_example == 2
    self.rows = batch_size * sounds_per_example
    self.local_batch_size = self.rows // process_count
    self.index = index
    self.num_examples = len(index)
    self.steps_per_epoch = self.num_examples // batch_size
    if self.steps_per_epoch == 0:
      raise config_lib.ConfigError(
          f'config.batch_size={batch_size} is larger than the {self.num_examples} training '
          'clips: not one full batch per epoch; use a smaller batch_size')
    if self.independent:
      pairing.check_two_classes(index.labels)
    elif pairs:  # the repair of every epoch's order must succeed: checked once, here
      pairing.check_pairable(index.labels, self.steps_per_epoch * batch_size, class_names,
                             batch_size)
    self.batch_size, self.input_length, self.seed = batch_size, int(input_length), int(seed)
    self.pairs, self.strong_augment, self.process_index = pairs, strong_augment, process_index
    self.num_threads, self.prefetch, self.num_workers = num_threads, prefetch, num_workers
    self._lock = threading.Lock()
    self._orders = {}      # epoch -> order (the last two)
    self._stream = None    # (next global step, iterator): batches kept flowing across epochs

  def __getstate__(self):  # grain worker processes get a copy without threads and iterators
    return {k: v for k, v in self.__dict__.items() if k not in ('_lock', '_orders', '_stream')}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock, self._orders, self._stream = threading.Lock(), {}, None

  def epoch_order(self, epoch: int) -> np.ndarray:
    """int64 (num_examples,): clip indices of the epoch; the first steps*B are used (shared
    pairs and single sounds; independent pairs draw each step's clips in `draws`)."""
    epoch = _nonneg(epoch, 'epoch')
    with self._lock:
      order = self._orders.get(epoch)
    if order is None:
      rng = np.random.default_rng([self.seed, _ORDER_STREAM, epoch])
      order = rng.permutation(self.num_examples)
      if self.pairs:
        order = pairing.pair_different_classes(order, self.index.labels,
                                               self.steps_per_epoch * self.batch_size)
      with self._lock:
        self._orders[epoch] = order
        for old in sorted(self._orders)[:-2]:  # keep two epochs (prefetch crosses epoch ends)
          del self._orders[old]
    return order

  def draws(self, epoch: int, step: int):
    """What batch `step` of `epoch` is made of, for the whole global batch (a pure function of
    (seed, epoch, step)): positions int64 (R,) clip indices, offsets_u float64 (R,), scales and
    gains float64 (R,) or None (no strong augmentation); R = `rows` sounds (2 B with independent
    pairs, else B)."""
    if not 0 <= step < self.steps_per_epoch:
      raise IndexError(f'step {step} outside 0..{self.steps_per_epoch - 1}')
    b, epoch = self.rows, _nonneg(epoch, 'epoch')
    if self.independent:
      positions = pairing.independent_pairs(
          np.random.default_rng([self.seed, _ORDER_STREAM, epoch, step]), self.index.labels,
          self.batch_size)
    else:
      positions = self.epoch_order(epoch)[step * b:(step + 1) * b]
    rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, epoch, step])
    offsets_u = rng.random(b)
    scales = gains = None
    if self.strong_augment:
      scales = MAX_TIME_SCALE ** rng.uniform(-1.0, 1.0, b)
      gains = 10.0 ** (rng.uniform(-MAX_GAIN_DB, MAX_GAIN_DB, b) / 20.0)
    return positions, offsets_u, scales, gains

  def _local_draws(self, epoch: int, step: int) -> tuple:
    """`draws(epoch, step)` cut to this process's rows."""
    rows = slice(self.process_index * self.local_batch_size,
                 (self.process_index + 1) * self.local_batch_size)
    return tuple(None if d is None else d[rows] for d in self.draws(epoch, step))

  def batch(self, epoch: int, step: int) -> dict:
    """Batch `step` of `epoch` for this process: x float32 (B_local, T), y int32 (B_local,)."""
    local, offsets_u, scales, gains = self._local_draws(epoch, step)
    x = augment.train_crops(self.index.read(local), self.input_length, offsets_u, scales, gains)
    return {'x': x, 'y': self.index.labels[local].astype(np.int32)}

  def plan(self, epoch: int, step: int) -> dict:
    """This process's rows of batch `step` of `epoch` as a crop plan (`on_device.crop_plan`):
    the same clips and random variates as `batch`, for crops cut on the device."""
    local, offsets_u, scales, gains = self._local_draws(epoch, step)
    return on_device.crop_plan(local, self.index.lengths[local], self.index.labels[local],
                               self.input_length, offsets_u, scales, gains)

  def global_batch(self, global_step: int) -> dict:
    """`batch(epoch, step)` for global_step = epoch * steps_per_epoch + step."""
    return self.batch(*divmod(int(global_step), self.steps_per_epoch))

  def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
    """Batches start_step..steps_per_epoch-1 of `epoch` (identical to an uninterrupted epoch);
    with threads or workers one grain iterator over global steps runs across epochs."""
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f'start_step {start_step} outside 0..{self.steps_per_epoch}')
    first = _nonneg(epoch, 'epoch') * self.steps_per_epoch + start_step
    count = self.steps_per_epoch - start_step
    if self.num_threads <= 0 and self.num_workers <= 0:
      return (self.global_batch(g) for g in range(first, first + count))
    return self._from_stream(first, count)

  def _from_stream(self, first: int, count: int) -> Iterator[dict]:
    if self._stream is None or self._stream[0] != first:
      self.close()
      ds = grain.MapDataset.range(first, first + _STREAM_LENGTH).map(self.global_batch)
      self._stream = (first, _iterate(ds, self.num_threads, self.prefetch, self.num_workers))
    for _ in range(count):
      position, it = self._stream
      batch = next(it)
      self._stream = (position + 1, it)
      yield batch

  def close(self):
    """Stops background threads / worker processes (also done when the loader is collected)."""
    it = self._stream and self._stream[1]
    self._stream = None
    if hasattr(it, 'close'):
      it.close()


class EvalLoader:
  """Every test clip exactly once: `num_crops` evenly spaced crops each, padded last batch.

  Attributes:
    num_examples: test clips N; filenames, labels: their names and int32 labels, in the global
      order of the batches.
    num_batches: batches per process (same on every process); local_batch_size: b.
  """

  def __init__(self, index: ClipIndex, *, input_length: int, batch_size: int, num_crops: int,
               process_index: int = 0, process_count: int = 1, num_threads: int = 1,
               prefetch: int = 2, num_workers: int = 0):
    _check_processes(batch_size, process_index, process_count, 'eval_batch_size', False)
    if num_crops < 1:
      raise ValueError(f'config.num_eval_crops must be >= 1, got {num_crops}')
    self.index = index
    self.num_examples = len(index)
    self.filenames = list(index.filenames)
    self.labels = index.labels.copy()
    self.local_batch_size = batch_size // process_count
    self.process_count, self.process_index = process_count, process_index
    self.num_batches = math.ceil(self.num_examples / batch_size)
    self.input_length, self.num_crops = int(input_length), int(num_crops)
    self.num_threads, self.prefetch, self.num_workers = num_threads, prefetch, num_workers

  def batch(self, g: int) -> dict:
    """Batch g: x float32 (b, num_crops, T), y int32 (b,), mask bool (b,) (False on padding rows:
    zero, label 0), index int32 (b,) (position in `filenames`, to restore clip order; -1 there)."""
    b = self.local_batch_size
    start = (g * self.process_count + self.process_index) * b
    positions = np.arange(start, start + b)
    mask = positions < self.num_examples
    x = np.zeros((b, self.num_crops, self.input_length), np.float32)
    y = np.zeros((b,), np.int32)
    valid = positions[mask]
    for row, clip in zip(np.flatnonzero(mask), self.index.read(valid)):
      x[row] = augment.eval_crops(clip, self.input_length, self.num_crops)
    y[mask] = self.labels[valid]
    index = np.where(mask, positions, -1).astype(np.int32)
    return {'x': x, 'y': y, 'mask': mask, 'index': index}

  def batches(self) -> Iterator[dict]:
    ds = grain.MapDataset.range(self.num_batches).map(self.batch)
    return _iterate(ds, self.num_threads, self.prefetch, self.num_workers)


def _nonneg(value, name) -> int:
  value = int(value)
  if value < 0:
    raise ValueError(f'{name} must be >= 0, got {value}')
  return value


def _check_processes(batch_size, process_index, process_count, field, pairs):
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must be in 0..process_count-1 '
                     f'(process_count={process_count})')
  config_lib.check_batch_split(batch_size, pairs=pairs, processes=process_count, field=field)
