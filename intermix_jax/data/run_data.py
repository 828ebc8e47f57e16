"""What one run (one test fold) trains and tests on: its identity, class coverage, skipped files.

    facts = run_data.describe(config, sample_rate, train_loader, eval_loader)
    facts.identity        # JSON dict, kept in workdir/dataset.json (workdir.check_or_store_dataset)

The rules (refusals and warnings): data/README.md "Preparing" (what a run trains on).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from intermix_jax.data import catalog
from intermix_jax.data import custom
from intermix_jax.data import layouts

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunData:
  """Facts about the data of one run (see module docstring).

  Attributes:
    identity: JSON dict, no paths (its keys: the dict `describe` builds).
    skipped_files: [{'path', 'problem', 'fold', 'class'}] (fold and class None when the prepared
      copy does not record them).
    class_clips: {'train': C ints, 'test': C ints}, clips per class.
    classes_without_test_clips: names of classes with training clips but no test clip.
    classes_without_clips: names of classes with no clip at all (partial official copies).
  """
  identity: dict
  skipped_files: list
  class_clips: dict
  classes_without_test_clips: list
  classes_without_clips: list


def clip_digest(filenames, labels, lengths, class_names) -> str:
  """12 hex digits of the sorted (filename, class name, length in samples) of a set of clips."""
  return layouts.json_digest(sorted((str(f), class_names[int(l)], int(n))
                                    for f, l, n in zip(filenames, labels, lengths)))


def skipped_files(metadata, class_names) -> list[dict]:
  """The bad files a prepared copy skipped, from its metadata (`RunData.skipped_files`)."""
  clips = metadata.get('skipped_clips')
  if clips is None:
    clips = [dict(path=p, problem=why) for p, why in metadata.get('skipped_files') or []]
  return [dict(path=s['path'], problem=s['problem'], fold=s.get('fold'),
               **{'class': None if s.get('label') is None else class_names[int(s['label'])]})
          for s in clips]


def describe(config, sample_rate: int, train_loader, eval_loader) -> RunData:
  """The RunData of `config` (config.fold = the test fold; sample_rate: Hz the data was prepared
  at) with the data.TrainLoader and data.EvalLoader it built.

  Raises:
    layouts.LayoutError: a class has no training clip though the dataset has clips of it.
  """
  info = catalog.dataset_info(config)
  fold = catalog.check_fold(config, info)
  builder = catalog.prepare(config, sample_rate)  # prepared already: reads its info
  meta = builder.info.metadata or {}
  names = list(info.class_names)
  skipped = skipped_files(meta, names)
  train, test = train_loader.index, eval_loader.index
  train_counts, test_counts = (np.bincount(index.labels, minlength=len(names))[:len(names)]
                               for index in (train, test))
  where = meta.get('source') or f'config.dataset={config.dataset!r}'

  absent = []
  for c, name in enumerate(names):
    if train_counts[c]:
      continue
    lost = [s for s in skipped if s['class'] == name and s['fold'] != fold]
    unknown = [s for s in skipped if s['class'] is None]
    if not (test_counts[c] or lost or config.dataset == custom.DATASET or unknown):
      absent.append(name)
      continue
    parts = []
    if lost:
      parts.append(f'its {len(lost)} file(s) in the training folds were skipped as bad '
                   f'(skip_bad_files=True), e.g. {lost[0]["path"]}: {lost[0]["problem"]}')
    elif unknown:
      parts.append(f'{len(unknown)} bad file(s) were skipped (skip_bad_files=True), e.g. '
                   f'{unknown[0]["path"]}')
    if test_counts[c]:
      parts.append(f'its {int(test_counts[c])} other clip(s) are in the test fold')
    raise layouts.LayoutError(
        f'{where}: class {name!r} has no training clip when fold {fold} is the test fold '
        f'({"; ".join(parts) or "no clip of it was prepared"}); a model trained so can never '
        'predict it. Fix or replace the bad files, or put clips of this class in the other folds')
  if absent:
    log.warning('%s: %d of the %d classes have no clip in this copy (%s); training and testing '
                'on the other classes only', where, len(absent), len(names), ', '.join(absent))
  no_test = [name for c, name in enumerate(names) if train_counts[c] and not test_counts[c]]
  if no_test:
    log.warning('WARNING: %s: class(es) %s have no clip in test fold %d: the test error says '
                'nothing about them (listed in results.json, classes_without_test_clips)', where,
                ', '.join(repr(n) for n in no_test), fold)
  if skipped:
    log.warning('%s: %d bad file(s) were skipped when the dataset was prepared '
                '(skip_bad_files=True; listed in results.json, skipped_files), e.g. %s: %s', where,
                len(skipped), skipped[0]['path'], skipped[0]['problem'])

  identity = dict(
      dataset=config.dataset, builder=builder.name, version=str(builder.version),
      sample_rate=int(sample_rate), class_names=names, num_folds=info.num_folds,
      test_fold=fold,
      fold_clips={str(k): int(builder.info.splits[f'fold{k}'].num_examples)
                  for k in range(1, info.num_folds + 1)},
      train_clips=len(train), test_clips=len(test),
      train_digest=clip_digest(train.filenames, train.labels, train.lengths, names),
      test_digest=clip_digest(test.filenames, test.labels, test.lengths, names),
      source_fingerprint=meta.get('source_fingerprint'), skipped_files=len(skipped),
      source_sample_rates=meta.get('source_sample_rates'))
  return RunData(identity=identity, skipped_files=skipped,
                 class_clips=dict(train=train_counts.tolist(), test=test_counts.tolist()),
                 classes_without_test_clips=no_test, classes_without_clips=absent)
