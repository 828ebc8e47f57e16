"""TensorBoard scalar summaries without TensorFlow, written synchronously by the calling thread.

clu.metric_writers imports TensorFlow for its summary writer (not installed here: TFDS runs without
it), so this module writes TensorBoard event files itself (the `tensorboard` package's record
format and protos), behind the same small interface as clu's MetricWriter (write_scalars,
write_texts, flush, close). `tensorboard --logdir WORKDIR` reads them.

No background thread: a failed write (disk full, read-only file system) raises an OSError naming
the event file in the thread that wrote, where the trainer's caller turns it into one line.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.record_writer import RecordWriter

_UID = itertools.count()


class SummaryWriter:
  """Scalars (and text) to a TensorBoard event file in `logdir`; a no-op when `enabled` is False.

  Args:
    logdir: directory of the event file (created if missing).
    enabled: False on processes other than 0 (only process 0 writes).
  Raises:
    OSError: (here and from every method) the directory or the file cannot be written; the
      exception's `filename` is the path.
  """

  def __init__(self, logdir: str, enabled: bool = True):
    self._file = self._records = None
    self.path = None
    if not enabled:
      return
    self.path = os.path.join(logdir, 'events.out.tfevents.%010d.%s.%s.%s' % (
        time.time(), socket.gethostname(), os.getpid(), next(_UID)))
    with _naming(self.path):
      os.makedirs(logdir, exist_ok=True)
      self._file = open(self.path, 'wb')
      self._records = RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    self.flush()

  def _write(self, event) -> None:
    with _naming(self.path):
      self._records.write(event.SerializeToString())

  def _add(self, step: int, values: list) -> None:
    if self._records is None:
      return
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes each `tag: value` as a TensorBoard scalar at `step`."""
    self._add(step, [summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                     for tag, v in scalars.items()])

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Writes each `tag: text` to TensorBoard's text dashboard (e.g. the config)."""
    values = []
    for tag, text in texts.items():
      tensor = tensor_pb2.TensorProto(
          dtype=types_pb2.DT_STRING, string_val=[text.encode('utf-8')],
          tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[]))
      meta = text_metadata.create_summary_metadata(display_name=tag, description='')
      values.append(summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta))
    self._add(step, values)

  def flush(self) -> None:
    if self._file is not None:
      with _naming(self.path):
        self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      f, self._file, self._records = self._file, None, None
      with _naming(self.path):
        f.close()


@contextlib.contextmanager
def _naming(path: str):
  """An OSError without a file name raised in the block gets `path` as its file name."""
  try:
    yield
  except OSError as error:
    if error.filename or not error.errno:
      raise
    raise OSError(error.errno, error.strerror or os.strerror(error.errno), path) from error
