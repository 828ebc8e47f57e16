"""dataset='custom' (issue 10): the user's folder or csv -> TFDS builder -> loaders -> the trainer.

Everything runs on tiny generated audio (mixed rates, mono/stereo, wav/flac/ogg); the last test
runs the real command line `python -m intermix_jax.main --config=configs/custom.py:audio_dir=...`.
"""
import csv
import os
import re

import numpy as np
import pytest
import soundfile as sf

import helpers
from intermix_jax import config_checks
from intermix_jax import data
from intermix_jax.data import audio_decode
from intermix_jax.data import custom
from intermix_jax.data import layouts

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('folder') / 'my sounds'
  return str(root), helpers.write_class_folders(str(root))


def write_csv(path, rows, header=('filename', 'label')):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


# ------------------------------------------------------------------------------------------------
# Fold assignment: laws
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sizes,k', [((10, 10, 10), 5), ((7, 3, 12, 1), 5), ((4, 9), 3),
                                     ((23,), 10)])
def test_assign_folds_is_stratified_contiguous_and_order_free(sizes, k):
  names, labels = [], []
  for c, n in enumerate(sizes):
    names += [f'{c}-{i:03d}' for i in range(n)]
    labels += [f'class{c}'] * n
  folds = custom.assign_folds(names, labels, k)
  assert folds.min() >= 1 and folds.max() <= k
  for c, n in enumerate(sizes):
    f = folds[[i for i, lab in enumerate(labels) if lab == f'class{c}']]  # in sorted-name order
    counts = np.bincount(f, minlength=k + 1)[1:]
    assert counts.max() - counts.min() <= 1 and counts.sum() == n   # stratified
    changes = int(np.sum(f[1:] != f[:-1]))
    assert changes == len(set(f.tolist())) - 1                       # one contiguous block per fold
  perm = np.random.default_rng(0).permutation(len(names))
  shuffled = custom.assign_folds([names[i] for i in perm], [labels[i] for i in perm], k)
  np.testing.assert_array_equal(shuffled, folds[perm])               # order of listing irrelevant


def test_class_names_sort_numerically_when_all_integers():
  assert custom.sort_class_names(['10', '9', '2', '10']) == ('2', '9', '10')
  assert custom.sort_class_names(['b', '10', 'a', '9']) == ('10', '9', 'a', 'b')


# ------------------------------------------------------------------------------------------------
# Scanning the layouts
# ------------------------------------------------------------------------------------------------
def test_folder_layout_scan(folder):
  root, written = folder
  layout = custom.scan(audio_dir=root)
  assert layout.class_names == tuple(sorted(helpers.CUSTOM_CLASSES))
  assert {r.filename: layout.class_names[r.label] for r in layout.records} == written
  assert layout.num_folds == 5 and layout.folds_assigned
  want = custom.assign_folds([r.filename for r in layout.records],
                             [r.label for r in layout.records], 5)
  assert [r.fold for r in layout.records] == want.tolist()
  assert layout.config_name(16000) == f'my_sounds_{layout.fingerprint}_sr16000'
  info = data.dataset_info(helpers.custom_config(f'audio_dir={root}'))
  assert info == data.DatasetInfo('custom', 3, layout.class_names, 5)


def test_csv_layout_with_folds_string_labels_and_absolute_paths(folder, tmp_path):
  root, written = folder
  items = sorted(written.items())
  rows = [(os.path.join(root, f) if i % 2 else f, label.upper(), 1 + i % 3)
          for i, (f, label) in enumerate(items)]
  path = write_csv(tmp_path / 'labels.csv', rows, ('filename', 'label', 'fold'))
  layout = custom.scan(audio_dir=root, metadata_csv=path)
  assert layout.class_names == tuple(sorted({r[1] for r in rows}))
  assert layout.num_folds == 3 and not layout.folds_assigned
  for r, row in zip(layout.records, rows):
    assert (r.filename, layout.class_names[r.label], r.fold) == row
    assert os.path.isfile(r.path)
  # Without a fold column the folds are assigned; file names relative to the csv's folder.
  rel = write_csv(os.path.join(root, 'meta.csv'), [(f, label) for f, label in items])
  layout2 = custom.scan(metadata_csv=rel, num_folds=4)
  assert layout2.folds_assigned and layout2.num_folds == 4 and layout2.root == root
  assert sorted(r.fold for r in layout2.records) == sorted(
      custom.assign_folds([f for f, _ in items], [label for _, label in items], 4).tolist())


def test_fingerprint_follows_the_files(folder, tmp_path):
  root, _ = folder
  copy = tmp_path / 'copy'
  helpers.write_class_folders(str(copy))
  before = custom.scan(audio_dir=str(copy)).fingerprint
  assert custom.scan(audio_dir=str(copy)).fingerprint == before
  sf.write(str(copy / 'beep' / 'extra.wav'), helpers.tone(1000, 0.2, 8000, 1, 0), 8000)
  assert custom.scan(audio_dir=str(copy)).fingerprint != before
  assert custom.scan(audio_dir=str(copy), num_folds=3).fingerprint != \
      custom.scan(audio_dir=str(copy)).fingerprint


@pytest.mark.parametrize('make,exc,words', [
    (lambda d: dict(), custom.CustomConfigError, ['config.audio_dir', 'config.data_dir']),
    (lambda d: dict(audio_dir=str(d / 'absent')), custom.CustomConfigError, ['not a directory']),
    (lambda d: dict(audio_dir=str(d), num_folds=1), custom.CustomConfigError, ['num_folds=1']),
    (lambda d: dict(metadata_csv=str(d / 'none.csv')), custom.CustomConfigError, ['none.csv']),
])
def test_config_errors_name_the_field(tmp_path, make, exc, words):
  with pytest.raises(exc) as e:
    custom.scan(**make(tmp_path))
  for w in words:
    assert w in str(e.value)


def _tone_file(path, rate=8000):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, helpers.tone(440, 0.1, rate, 1, 0), rate)


@pytest.mark.parametrize('case,words', [
    ('loose', ['directly in the dataset folder', 'x.wav']),
    ('one_class', ['at least 2']),
    ('empty_class', ["class folder 'b'", 'no audio file']),
    ('no_classes_but_csv', ['no class sub-folders', 'metadata_csv=']),
    ('csv_missing_column', ['missing column(s) label']),
    ('csv_empty_label', ['line 3', "'label' is empty"]),
    ('csv_fold_gap', ['fold(s) [2]']),
    ('csv_bad_fold', ['line 2', "'fold'", 'not an integer']),
    ('csv_duplicate', ["'a/1.wav' is listed more than once"]),
])
def test_layout_errors_name_the_file_and_problem(tmp_path, case, words):
  d = str(tmp_path)
  kwargs = dict(audio_dir=d)
  for name in ('a/1.wav', 'a/2.wav', 'b/1.wav', 'b/2.wav'):
    _tone_file(os.path.join(d, name))
  if case == 'loose':
    _tone_file(os.path.join(d, 'x.wav'))
  elif case == 'one_class':
    kwargs = dict(audio_dir=os.path.join(d, 'a'))
    for name in ('1.wav', '2.wav'):
      os.remove(os.path.join(d, 'a', name))
      _tone_file(os.path.join(d, 'a', 'only', name))
  elif case == 'empty_class':
    for name in ('1.wav', '2.wav'):
      os.remove(os.path.join(d, 'b', name))
    open(os.path.join(d, 'b', 'notes.txt'), 'w').close()
  elif case == 'no_classes_but_csv':
    kwargs = dict(audio_dir=os.path.join(d, 'flat'))
    _tone_file(os.path.join(d, 'flat', 'sub', 'x.wav'))
    os.rename(os.path.join(d, 'flat', 'sub', 'x.wav'), os.path.join(d, 'flat', 'x.txt'))
    os.rmdir(os.path.join(d, 'flat', 'sub'))
    write_csv(os.path.join(d, 'flat', 'labels.csv'), [])
  else:
    rows = {'csv_missing_column': ([('a/1.wav',)], ('filename',)),
            'csv_empty_label': ([('a/1.wav', 'x'), ('b/1.wav', '')], ('filename', 'label')),
            'csv_fold_gap': ([('a/1.wav', 'x', 1), ('b/1.wav', 'y', 3)],
                             ('filename', 'label', 'fold')),
            'csv_bad_fold': ([('a/1.wav', 'x', 'one')], ('filename', 'label', 'fold')),
            'csv_duplicate': ([('a/1.wav', 'x'), ('a/1.wav', 'y')], ('filename', 'label'))}[case]
    kwargs = dict(metadata_csv=write_csv(os.path.join(d, 'labels.csv'), *rows))
  with pytest.raises(layouts.LayoutError) as e:
    custom.scan(**kwargs)
  for w in words:
    assert w in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------------
# The builder and the loaders
# ------------------------------------------------------------------------------------------------
def test_builder_decodes_every_file_like_the_data_package(folder, tmp_path):
  root, _ = folder
  config = helpers.custom_config(f'audio_dir={root},strategy=intermix,batch_size=8,'
                                 f'num_eval_crops=2,fold=2,backbone=envnet')
  config.data_dir = str(tmp_path / 'tfds')
  builder = data.prepare(config, 16000)
  layout = custom.scan(audio_dir=root)
  assert builder.info.features['label'].names == list(layout.class_names)
  by_name = {r.filename: r for r in layout.records}
  seen = set()
  for k in range(1, 6):
    for ex in builder.as_data_source(split=f'fold{k}'):
      name = ex['filename'].decode()
      r = by_name[name]
      assert (ex['label'], ex['fold']) == (r.label, r.fold) == (r.label, k)
      # The data package's own decoder (resampling, downmix, int16 scale, no trimming).
      np.testing.assert_array_equal(ex['audio'], audio_decode.load_audio(
          r.path, 16000, expect=custom.AUDIO_EXPECTATION))
      assert abs(len(ex['audio']) - helpers.CUSTOM_SECONDS * 16000) <= 1
      seen.add(name)
  assert seen == set(by_name)
  # Loaders: pairs of different classes from folds != 2, every clip of fold 2 once in eval.
  train = data.make_train_loader(config, 16000, 4000, num_threads=0)
  batch = next(iter(train.batches(0)))
  assert batch['x'].shape == (8, 4000) and np.all(batch['y'][0::2] != batch['y'][1::2])
  assert train.num_examples == 24
  test = data.make_eval_loader(config, 16000, 4000, num_threads=0)
  assert sorted(test.filenames) == sorted(r.filename for r in layout.records if r.fold == 2)
  # The fold is checked against the dataset's folds, with the field named.
  config.fold = 6
  with pytest.raises(ValueError, match='config.fold=6'):
    data.make_eval_loader(config, 16000, 4000)


def test_csv_dataset_keeps_its_folds_through_the_builder(folder, tmp_path):
  root, written = folder
  rows = [(f, 'cat ' + label, 1 + i % 2) for i, (f, label) in enumerate(sorted(written.items()))]
  path = write_csv(tmp_path / 'labels.csv', rows, ('filename', 'label', 'fold'))
  config = helpers.custom_config(f'audio_dir={root},metadata_csv={path},fold=2')
  config.data_dir = str(tmp_path / 'tfds')
  info = data.dataset_info(config)
  assert info.num_folds == 2 and info.class_names == tuple(sorted({r[1] for r in rows}))
  builder = data.prepare(config, 8000)
  for k in (1, 2):
    got = {ex['filename'].decode(): info.class_names[ex['label']]
           for ex in builder.as_data_source(split=f'fold{k}')}
    assert got == {f: label for f, label, fold in rows if fold == k}


def test_bad_files_named_or_skipped(tmp_path):
  root = tmp_path / 'sounds'
  helpers.write_class_folders(str(root))
  bad = root / 'beep' / 'broken.ogg'
  bad.write_bytes(b'OggS' + b'\0' * 100)
  config = helpers.custom_config(f'audio_dir={root}')
  config.data_dir = str(tmp_path / 'tfds')
  with pytest.raises(audio_decode.BadAudioFileError) as e:
    data.prepare(config, 8000)
  assert str(bad) in str(e.value) and 'skip_bad_files' in str(e.value)
  config.skip_bad_files = True
  with pytest.warns(data.SkippedFilesWarning, match='broken.ogg'):
    builder = data.prepare(config, 8000)
  total = sum(len(builder.as_data_source(split=f'fold{k}')) for k in range(1, 6))
  assert total == 3 * helpers.CUSTOM_FILES_PER_CLASS
  assert builder.info.metadata['skipped_files'][0][0] == str(bad)


def test_csv_missing_files_explain_where_names_resolve(tmp_path):
  """Issue 27 item 6: a csv whose names resolve nowhere (the audio lies elsewhere) says against
  which folder they resolve, with a resolved path, and does not offer to skip every file; when
  some files exist, skipping the others is offered."""
  audio = tmp_path / 'audio'
  for name in ('0_a_0.wav', '0_a_1.wav', '1_a_0.wav', '1_a_1.wav'):
    _tone_file(str(audio / name))
  rows = [(n, n[0]) for n in sorted(os.listdir(audio))]
  elsewhere = tmp_path / 'meta'
  os.makedirs(elsewhere)
  csv_path = write_csv(elsewhere / 'labels.csv', rows)
  config = helpers.custom_config(f'metadata_csv={csv_path},skip_bad_files=true')
  config.data_dir = str(tmp_path / 'tfds')
  for call in (lambda: custom.scan(metadata_csv=csv_path), lambda: data.prepare(config, 8000)):
    with pytest.raises(layouts.LayoutError) as e:
      call()
    message = str(e.value)
    assert "none of the 4 files it lists exists" in message, message
    assert f"the csv's own folder {elsewhere} (config.audio_dir is not set)" in message, message
    assert f"'0_a_0.wav' -> {elsewhere / '0_a_0.wav'} is missing" in message, message
    assert 'set audio_dir' in message and 'skip_bad_files' not in message, message
    assert '\n' not in message
  # With audio_dir given and wrong: the same, naming config.audio_dir.
  with pytest.raises(layouts.LayoutError, match=re.escape(
      f"resolve against config.audio_dir={tmp_path}: e.g. '0_a_0.wav' -> "
      f"{tmp_path / '0_a_0.wav'} is missing")):
    custom.scan(audio_dir=str(tmp_path), metadata_csv=csv_path)
  # Some files exist: the error names how many are missing, the resolution, and offers skipping.
  csv_path = write_csv(elsewhere / 'some.csv', rows + [('gone/2_b_0.wav', '2')])
  config = helpers.custom_config(f'audio_dir={audio},metadata_csv={csv_path},num_folds=2')
  config.data_dir = str(tmp_path / 'tfds')
  with pytest.raises(audio_decode.BadAudioFileError) as e:
    data.prepare(config, 8000)
  message = str(e.value)
  assert message.startswith(f"{audio / 'gone' / '2_b_0.wav'}: file is missing: 1 of the 5 files "
                            f'listed in {csv_path} are missing'), message
  assert f"config.audio_dir={audio}: e.g. 'gone/2_b_0.wav' -> " in message, message
  assert 'skip_bad_files=True' in message and '\n' not in message
  config.skip_bad_files = True
  with pytest.warns(data.SkippedFilesWarning, match='2_b_0.wav'):
    data.prepare(config, 8000)


def test_config_file_fields_and_checks(tmp_path):
  c = helpers.custom_config(f'audio_dir={tmp_path},metadata_csv=x.csv,num_folds=7,backbone=envnet')
  assert (c.dataset, c.audio_dir, c.metadata_csv, c.num_folds) == ('custom', str(tmp_path),
                                                                    'x.csv', 7)
  assert c.data_dir is None and c.backbone == 'envnet' and c.opt_defaults_from == 'envnet/esc50'
  config_checks.validate(c)   # 'custom' is a known dataset; its folds are checked by the loaders
  with pytest.raises(ValueError,
                     match="unknown config field 'audio_folder'; valid fields: audio_dir"):
    helpers.custom_config('audio_folder=x')
  with pytest.raises(ValueError, match="'num_folds' expects int"):
    helpers.custom_config('num_folds=five')


# ------------------------------------------------------------------------------------------------
# The command line of the issue, for real
# ------------------------------------------------------------------------------------------------
def test_main_command_trains_and_evaluates_on_a_custom_folder(tmp_path_factory):
  run = helpers.custom_folder_run(tmp_path_factory)
  assert run['returncode'] == 0, run['stderr']
  r = helpers.results(run['workdir'])
  layout = custom.scan(audio_dir=run['audio_dir'])
  assert r['status'] == 'finished' and r['dataset'] == 'custom'
  assert r['class_names'] == list(layout.class_names) and r['num_folds'] == 5
  assert r['config']['audio_dir'] == run['audio_dir']
  assert r['num_epochs'] == 2 and r['total_steps'] == 2                 # InterMix doubles epochs
  test_fold = sorted(x.filename for x in layout.records if x.fold == 1)
  assert sorted(r['predictions']['filenames']) == test_fold
  assert r['num_train_examples'] == len(layout.records) - len(test_fold)
  assert 0 <= r['final_error'] <= 100
  prepared = os.listdir(os.path.join(run['data_dir'], 'custom_audio'))
  assert prepared == [layout.config_name(16000)]
