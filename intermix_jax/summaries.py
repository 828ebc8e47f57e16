"""TensorBoard scalar summaries without TensorFlow.

clu.metric_writers imports TensorFlow for its summary writer (not installed here: TFDS runs without
it), so this module writes TensorBoard event files with the `tensorboard` package's own
EventFileWriter, behind the same small interface as clu's MetricWriter (write_scalars, write_texts,
flush, close). `tensorboard --logdir WORKDIR` reads them.
"""
from __future__ import annotations

import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2


class SummaryWriter:
  """Scalars (and text) to TensorBoard event files in `logdir`; a no-op when `enabled` is False.

  Args:
    logdir: directory of the event files (created if missing).
    enabled: False on processes other than 0 (only process 0 writes).
  """

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = EventFileWriter(logdir) if enabled else None

  def _add(self, step: int, values: list) -> None:
    if self._writer is None:
      return
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
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
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None
