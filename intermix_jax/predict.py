"""Classify audio files with a trained workdir (the docs/method.md §5 test protocol).

    python -m intermix_jax.predict --workdir=W FILE_OR_DIR... [--top_k=3] [--json]

Loads W's config and newest verified checkpoint read-only, decodes each file as in training and
averages the softmax over `config.num_eval_crops` evenly spaced crops of the T/2-padded clip;
prints the top-k classes per file, or one JSON document (`to_json`). The command, its output and
its exit status (0 all classified; 1 some input failed; 2 the workdir is unusable):
docs/own_data_and_models.md, "3. Prediction".

From Python:
    predictor = Predictor('runs/my_sounds/fold1')
    probs = predictor.probabilities([clip_int16, ...])       # (n, C), rows sum to 1
    results, errors = predictor.predict_paths(['a.wav', 'folder/'])
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Sequence

import numpy as np

from intermix_jax import io_errors


MAX_CHANNELS = 64  # prediction accepts any file with up to this many channels (downmixed)


PredictWorkdirError = io_errors.WorkdirError  # the workdir cannot be used for prediction


@dataclasses.dataclass(frozen=True)
class FilePrediction:
  """Prediction of one file. probs: float (C,) mean softmax over the crops; top: [(class, p)]."""
  path: str
  probs: np.ndarray
  top: list[tuple[str, float]]


class Predictor:
  """The model of a training workdir, ready to classify clips.

  Attributes:
    workdir, config, class_names (C names), model, mesh, state and step: trained.TrainedRun's;
    sample_rate (Hz), input_length (T samples) and num_crops of the run's evaluation.
  Raises:
    PredictWorkdirError: the workdir is unusable (one line; see trained.load_workdir).
  """

  def __init__(self, workdir: str):
    from intermix_jax import steps, trained
    from intermix_jax.data import catalog, custom

    run = trained.load_workdir(workdir)
    self.workdir, self.config, self.class_names = run.workdir, run.config, run.class_names
    self.model, self.mesh, self.state, self.step = run.model, run.mesh, run.state, run.step
    c = self.config
    self.sample_rate = int(self.model.sample_rate)
    self.input_length = int(self.model.input_length)
    self.num_crops = int(c.num_eval_crops)
    self.batch_size = int(c.eval_batch_size)
    self.expect = dataclasses.replace(custom.AUDIO_EXPECTATION, max_channels=MAX_CHANNELS)
    # docs/method.md §5: decode a new file the way the run's training clips were (ESC trims zeros).
    self.trim = catalog.trims_zeros(c.dataset)
    self.eval_step = steps.mesh_eval_step(self.model, self.mesh)

  def load(self, path: str) -> np.ndarray:
    """int16 (n,) mono clip at the model's rate, decoded as in training (BadAudioFileError)."""
    from intermix_jax.data import audio_decode
    if not os.path.exists(path):
      raise audio_decode.BadAudioFileError(path, 'no such file or directory')
    return audio_decode.load_audio(path, self.sample_rate, trim=self.trim, expect=self.expect)

  def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
    """float32 (n, C): mean over num_crops evenly spaced crops of softmax(logits) per clip.

    Args:
      clips: n int16-scale arrays (m_i,) at `sample_rate` (e.g. from `load`).
    """
    from intermix_jax import trained
    from intermix_jax.data import pipeline
    if not len(clips):
      return np.zeros((0, len(self.class_names)), np.float32)
    loader = pipeline.EvalLoader(_Clips(clips), input_length=self.input_length,
                                 batch_size=self.batch_size, num_crops=self.num_crops,
                                 num_threads=0)
    return trained.evaluate_clips(self.eval_step, self.state, loader, self.mesh,
                                  per_clip=('probs',), totals=('count',))['probs']

  def top_k(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    """[(class name, probability)] of the k most probable classes, most probable first."""
    order = np.argsort(-probs, kind='stable')[:max(1, int(k))]
    return [(self.class_names[i], float(probs[i])) for i in order]

  def predict_paths(self, paths: Sequence[str], top_k: int = 3
                    ) -> tuple[list[FilePrediction], list[tuple[str, str]]]:
    """Classifies every file given or found in a given directory.

    Returns:
      (predictions in input order, [(path, why it failed)]): unreadable files are reported, the
      others classified.
    """
    from intermix_jax.data import audio_decode
    results, errors, loaded = [], [], []

    def flush():
      probs = self.probabilities([clip for _, clip in loaded])
      results.extend(FilePrediction(path, p, self.top_k(p, top_k))
                     for (path, _), p in zip(loaded, probs))
      loaded.clear()

    for path, problem in expand_paths(paths):  # one eval batch of clips in memory at a time
      if problem is None:
        try:
          loaded.append((path, self.load(path)))
          if len(loaded) == self.batch_size:
            flush()
          continue
        except audio_decode.BadAudioFileError as e:
          problem = e.problem
      errors.append((path, problem))
    flush()
    return results, errors


class _Clips(list):
  """In-memory clips as the clip index of a data.EvalLoader (labels 0: unknown)."""

  def __init__(self, clips: Sequence[np.ndarray]):
    super().__init__(np.asarray(clip) for clip in clips)
    self.labels, self.filenames = np.zeros((len(self),), np.int32), list(map(str, range(len(self))))

  def read(self, positions) -> list[np.ndarray]:
    return [self[i] for i in positions]


def expand_paths(paths: Sequence[str]) -> list[tuple[str, str | None]]:
  """[(file, None)] to classify, or [(path, why not)], in input order; a directory becomes its
  audio files (recursive, sorted)."""
  from intermix_jax.data import custom
  out = []
  for p in paths:
    if os.path.isdir(p):
      found, _ = custom.list_audio_files(p)
      out.extend((f, None) for f in found)
      if not found:
        out.append((p, f'directory holds no audio file ({" ".join(custom.AUDIO_EXTENSIONS)})'))
    else:
      out.append((p, None))  # any file: the decoder says if it is not audio
  return out


def format_text(results: Sequence[FilePrediction]) -> str:
  """Plain-text report: the file, then one `  class  probability` line per top class."""
  lines = []
  for r in results:
    lines.append(r.path)
    width = max(len(name) for name, _ in r.top)
    lines.extend(f'  {name:<{width}}  {p:.4f}' for name, p in r.top)
  return '\n'.join(lines)


def to_json(predictor: Predictor, results: Sequence[FilePrediction],
            errors: Sequence[tuple[str, str]]) -> dict:
  index = {name: i for i, name in enumerate(predictor.class_names)}
  return dict(
      workdir=predictor.workdir, checkpoint_step=int(predictor.step),
      sample_rate=predictor.sample_rate, num_crops=predictor.num_crops,
      class_names=list(predictor.class_names),
      predictions=[dict(file=r.path, top_k=[dict({'class': n, 'label': index[n],
                                                  'probability': p}) for n, p in r.top])
                   for r in results],
      errors=[dict(file=path, error=why) for path, why in errors])


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (0 ok; 1 some file failed, or one line `error: ...`
  for a data or the machine's error: cli.one_line_errors; 2 bad workdir)."""
  parser = argparse.ArgumentParser(
      prog='python -m intermix_jax.predict',
      description='Classify audio files with a trained workdir (10-crop protocol).')
  parser.add_argument('--workdir', required=True,
                      help='workdir of a training run (config.json, checkpoints/); for a fold=all '
                      'run, one of its fold_<k> directories')
  parser.add_argument('--top_k', type=int, default=3, help='classes shown per file (default 3)')
  parser.add_argument('--json', action='store_true', help='print one JSON document')
  parser.add_argument('paths', nargs='+', metavar='FILE_OR_DIR',
                      help='audio files, or directories searched recursively for audio files')
  args = parser.parse_args(argv)  # None: sys.argv[1:]
  if args.top_k < 1:
    parser.error(f'--top_k must be >= 1, got {args.top_k}')
  from intermix_jax import checkpoints, cli
  checkpoints.quiet_orbax_logging(logging.ERROR)  # read-only restores: orbax's warnings too

  def classify() -> int:
    predictor = Predictor(args.workdir)
    results, errors = predictor.predict_paths(args.paths, args.top_k)
    for path, why in errors:
      io_errors.error(f'{path}: {why}')
    if args.json:
      print(json.dumps(to_json(predictor, results, errors), indent=1))
    elif results:
      print(format_text(results))
    return 1 if errors else 0
  return cli.one_line_errors(classify)


if __name__ == '__main__':
  sys.exit(main())
