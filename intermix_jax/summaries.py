"""TensorBoard summaries without TensorFlow (clu's MetricWriter interface, the `tensorboard`
package's record format), written by the calling thread; and the console's steps/s and ETA.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import time
from typing import Callable, Mapping

from absl import logging

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

_UID = itertools.count()


class SummaryWriter:
  """Scalars (and text) to a TensorBoard event file in `logdir`; a no-op when `enabled` is False.

  Args:
    logdir: directory of the event file (created if missing).
  Raises:
    OSError: (here and from every method) the directory or the file cannot be written; the
      exception's `filename` is the path.
  """

  def __init__(self, logdir: str, enabled: bool = True):
    self._records = self.path = None
    if not enabled:
      return
    self.path = os.path.join(logdir, 'events.out.tfevents.%010d.%s.%s.%s' % (
        time.time(), socket.gethostname(), os.getpid(), next(_UID)))
    with _naming(self.path):
      os.makedirs(logdir, exist_ok=True)
      self._records = RecordWriter(open(self.path, 'wb'))  # (flush and close the file)
    self._add(file_version='brain.Event:2')
    self.flush()

  def _add(self, **fields) -> None:
    """Writes an Event of `fields` at the current wall time (nothing when disabled)."""
    if self._records is not None:
      with _naming(self.path):
        self._records.write(event_pb2.Event(wall_time=time.time(), **fields).SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes each `tag: value` as a TensorBoard scalar at `step`."""
    self._add(step=int(step), summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes each `tag: text` to TensorBoard's text dashboard (e.g. the config)."""
    values = []
    for tag, text in texts.items():
      tensor = tensor_pb2.TensorProto(
          dtype=types_pb2.DT_STRING, string_val=[text.encode('utf-8')],
          tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[]))
      meta = text_metadata.create_summary_metadata(display_name=tag, description='')
      values.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta))
    self._add(step=int(step), summary=summary_pb2.Summary(value=values))

  def flush(self) -> None:
    if self._records is not None:
      with _naming(self.path):
        self._records.flush()

  def close(self) -> None:
    if self._records is not None:
      records, self._records = self._records, None
      with _naming(self.path):
        records.close()


@contextlib.contextmanager
def _naming(path: str):
  """An OSError without a file name raised in the block gets `path` as its file name."""
  try:
    yield
  except OSError as error:
    if error.filename or not error.errno:
      raise
    raise OSError(error.errno, error.strerror or os.strerror(error.errno), path) from error


# --- the console's progress ------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
  """'H:MM:SS', or '?' when not finite."""
  if not math.isfinite(seconds):
    return '?'
  m, s = divmod(int(round(seconds)), 60)
  return f'{m // 60}:{m % 60:02d}:{s:02d}'


def steps_per_sec(last_log: tuple[float, int], step: int) -> tuple[float, tuple[float, int]]:
  """(steps/s since `last_log` = (time, step), the new last_log)."""
  now = time.time()
  return (step - last_log[1]) / max(now - last_log[0], 1e-9), (now, step)


class Pace:
  """The ETA from the steps/s of wall time since this process's first progress log (evaluations
  and checkpoints included, compilation not)."""

  def __init__(self):
    self.first: tuple[float, int] | None = None

  def eta(self, step: int, total: int, train_rate: float) -> str:
    if self.first is None:
      self.first = (time.time(), step)
    if step <= self.first[1]:  # no wall time measured yet
      return fmt_time((total - step) / train_rate)
    wall_rate, _ = steps_per_sec(self.first, step)
    return f'{fmt_time((total - step) / wall_rate)} at {wall_rate:.2f} steps/s overall'


class SaveShare:
  """One warning per training loop when, between two periodic saves, saving took more than half
  the wall time (benchmarks/README.md, "Runs in one program on an H200")."""

  def __init__(self):
    self.since = time.time()  # the start of the current period (the previous check)
    self.saving = 0.0  # seconds spent in `timed` saves since then
    self.warned = False

  def timed(self, save: Callable[[], None]) -> None:
    start = time.time()
    save()
    self.saving += time.time() - start

  def check(self, every_epochs: int) -> None:
    """Ends a period (call after the period's save): warns the first time saves took most of it."""
    now = time.time()
    period = now - self.since
    if not self.warned and self.saving > 0.5 * period > 0:
      self.warned = True
      logging.warning('checkpoints took %.0f s of the last %.0f s of training (%.0f%%): raise '
                      'config.checkpoint_every_epochs (now %d) so that saves take less; a SIGTERM '
                      'still saves first', self.saving, period, 100 * self.saving / period,
                      every_epochs)
    self.since, self.saving = now, 0.0
