"""Issue 18: silent wrong results from data that changed under a run (items 1, 2 and 4).

  1. a resumed run must train on the data it started with: workdir/dataset.json records the
     data's identity (content, not paths); a resume on changed data is refused in one line, the
     same data moved to another data_dir / audio_dir resumes;
  2. a prepared copy must match what it is prepared from: another copy in config.manual_dir (or
     another archive of the same name) is refused, a copy prepared with skip_bad_files=True that
     skipped files is refused by a run with skip_bad_files=False; leftover `incomplete.*`
     preparations of dead processes are deleted, live ones are waited for;
  4. a class left without training clips (bad files skipped) is refused naming the class and the
     fold; one without test clips is warned about and listed in results.json; skipped files are
     listed in results.json every time, also when the prepared copy is reused.
  Issue 27 item 3: a source at another sample rate than the backbone's is resampled, warned about
     once in one line, recorded (prepared copy's metadata, dataset.json, results.json) and, when
     upsampled where the official release is not, a protocol deviation of the report.
Tiny generated audio (tests/fixtures_audio.py, tests/helpers.py); the trainer runs in-process
(EnvNet width 0.25, 2 classes, one step), once from the command line.
"""
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import soundfile as sf

import fixtures_audio
import helpers
from intermix_jax import data, train, workdir as workdir_lib
from intermix_jax.data import catalog

RATE = 8000  # data-level tests
pytestmark = pytest.mark.filterwarnings(
    'ignore:.*the official (ESC-50|UrbanSound8K) has:UserWarning')
# In-process training: one compiled step shared by every test here (2 classes, batch 2).
TINY = ('backbone=envnet,strategy=standard,model.width=0.25,model.fc_units=32,batch_size=2,'
        'steps_per_epoch=1,num_epochs=1,num_eval_crops=2,eval_batch_size=4,eval_every_epochs=1,'
        'checkpoint_every_epochs=1,num_folds=2')


def tone_file(path, freq=440.0, rate=8000, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, helpers.tone(freq, 0.3, rate, 1, seed), rate)


def two_classes(root, per_class=4, start=0):
  """root/a/clipNN.wav and root/b/clipNN.wav (clips start..start+per_class-1)."""
  for c, (name, freq) in enumerate((('a', 330.0), ('b', 1500.0))):
    for i in range(start, start + per_class):
      tone_file(os.path.join(root, name, f'clip{i:02d}.wav'), freq, seed=10 * c + i)


# ------------------------------------------------------------------------------------------------
# 1. Resuming on changed data
# ------------------------------------------------------------------------------------------------
def test_resume_after_the_files_changed_is_refused_naming_what_changed(tmp_path):
  audio, d = str(tmp_path / 'sounds'), str(tmp_path / 'run')
  two_classes(audio)
  config = helpers.custom_config(f'audio_dir={audio},{TINY},data_dir={tmp_path / "tfds"}')
  r = train.train_and_evaluate(config, d)
  assert r['status'] == 'finished' and (r['num_train_examples'], r['num_test_examples']) == (4, 4)
  before = open(os.path.join(d, 'results.json')).read()
  two_classes(audio, per_class=2, start=4)  # two more clips in each class
  with pytest.raises(workdir_lib.WorkdirConfigError) as e:
    train.train_and_evaluate(config, d)
  msg = str(e.value)
  assert d in msg and 'train clips 4 -> 6' in msg and 'test clips 4 -> 6' in msg, msg
  assert 'fold 1 clips 4 -> 6' in msg and '\n' not in msg, msg
  assert open(os.path.join(d, 'results.json')).read() == before  # nothing overwritten
  stored = helpers.read_json(os.path.join(d, 'dataset.json'))
  assert stored['train_clips'] == 4 and stored['fold_clips'] == {'1': 4, '2': 4}
  assert r['dataset_identity'] == stored


def test_same_data_moved_to_another_data_dir_and_audio_dir_resumes(tmp_path):
  audio, d = str(tmp_path / 'sounds'), str(tmp_path / 'run')
  two_classes(audio)
  config = helpers.custom_config(f'audio_dir={audio},{TINY},data_dir={tmp_path / "tfds"}')
  r1 = train.train_and_evaluate(config, d)
  moved = str(tmp_path / 'elsewhere' / 'sounds')
  shutil.copytree(audio, moved)  # copy2: the same content (names, sizes)
  shutil.rmtree(audio)
  config = helpers.custom_config(f'audio_dir={moved},{TINY},data_dir={tmp_path / "tfds2"}')
  r2 = train.train_and_evaluate(config, d)  # prepared anew in tfds2, same identity: resumes
  assert r2['status'] == 'finished' and r2['final_error'] == r1['final_error']
  assert r2['dataset_identity'] == r1['dataset_identity']
  assert os.path.isdir(tmp_path / 'tfds2' / 'custom_audio')
  # A changed file (other length) in the moved copy is caught even with equal clip counts.
  sf.write(os.path.join(moved, 'a', 'clip00.wav'), helpers.tone(330.0, 0.5, 8000, 1, 1), 8000)
  with pytest.raises(workdir_lib.WorkdirConfigError) as e:
    train.train_and_evaluate(config, d)
  assert 'other files, classes or lengths' in str(e.value), str(e.value)


@pytest.mark.slow
def test_command_line_refuses_to_resume_on_changed_data_in_one_line(tmp_path):
  audio, d = str(tmp_path / 'sounds'), str(tmp_path / 'run')
  two_classes(audio)
  command = [sys.executable, '-m', 'intermix_jax.main',
             f'--config=configs/custom.py:audio_dir={audio},{TINY},data_dir={tmp_path / "tfds"}',
             f'--workdir={d}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  p = subprocess.run(command, cwd=helpers.REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  two_classes(audio, per_class=2, start=4)
  p = subprocess.run(command, cwd=helpers.REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  errors = [l for l in p.stderr.splitlines() if l.startswith('error: ')]
  assert p.returncode == 1 and len(errors) == 1, p.stderr[-3000:]
  assert f'workdir {d}' in errors[0] and 'train clips 4 -> 6' in errors[0], errors
  assert helpers.read_json(os.path.join(d, 'results.json'))['num_train_examples'] == 4


# ------------------------------------------------------------------------------------------------
# 2. A prepared copy must match its source
# ------------------------------------------------------------------------------------------------
def esc10_config(manual_dir, data_dir, skip=False):
  c = helpers.repo_config('esc10.py', 'backbone=envnet')
  c.manual_dir, c.data_dir, c.skip_bad_files = str(manual_dir), str(data_dir), skip
  return c


def test_prepared_copy_from_another_manual_dir_is_refused(tmp_path):
  a = fixtures_audio.write_esc50_layout(tmp_path / 'A' / 'ESC-50-master')
  b = fixtures_audio.write_esc50_layout(tmp_path / 'B' / 'ESC-50-master',
                                        clips_per_class_per_fold=2)
  d = tmp_path / 'tfds'
  builder = data.prepare(esc10_config(tmp_path / 'A', d), RATE)
  assert len(builder.as_data_source(split='fold1')) == 4
  with pytest.raises(data.LayoutError) as e:
    data.prepare(esc10_config(tmp_path / 'B', d), RATE)
  msg = str(e.value)
  assert '20 clips listed by ' + a.root in msg and '40 clips listed by ' + b.root in msg, msg
  assert f'delete {builder.data_path}' in msg and '\n' not in msg, msg
  # The same copy moved (or copied) elsewhere is the same source: reused.
  shutil.copytree(tmp_path / 'A', tmp_path / 'A moved')
  shutil.rmtree(tmp_path / 'A')
  again = data.prepare(esc10_config(tmp_path / 'A moved', d), RATE)
  assert len(again.as_data_source(split='fold1')) == 4
  # No local copy given (the download would be the source): the prepared copy is used as is.
  c = esc10_config(tmp_path / 'A moved', d)
  c.manual_dir = None
  assert len(data.prepare(c, RATE).as_data_source(split='fold1')) == 4


def test_urbansound8k_copy_with_a_changed_file_is_refused(tmp_path):
  spec = fixtures_audio.write_urbansound8k_layout(tmp_path / 'copy' / 'UrbanSound8K',
                                                  classes=(0, 3))
  d = str(tmp_path / 'tfds')
  catalog.prepare_builder(data.get_builder('urbansound8k', RATE, data_dir=d),
                          manual_dir=spec.root)
  catalog.prepare_builder(data.get_builder('urbansound8k', RATE, data_dir=d),
                          manual_dir=spec.root)  # unchanged: reused
  clip = spec.records[0]
  sf.write(clip.path, fixtures_audio.tone(500.0, 0.6, 22050, 1), 22050)  # another recording
  with pytest.raises(data.LayoutError, match='was prepared from another copy of the data'):
    catalog.prepare_builder(data.get_builder('urbansound8k', RATE, data_dir=d),
                            manual_dir=spec.root)


def test_another_archive_of_the_same_name_is_not_served_from_the_old_extraction(tmp_path):
  for name, per in (('A', 1), ('B', 2)):
    spec = fixtures_audio.write_esc50_layout(tmp_path / name / 'ESC-50-master',
                                             clips_per_class_per_fold=per)
    os.makedirs(tmp_path / f'manual_{name}')
    with zipfile.ZipFile(tmp_path / f'manual_{name}' / 'ESC-50-master.zip', 'w') as z:
      for root, _, files in os.walk(spec.root):
        for f in files:
          path = os.path.join(root, f)
          z.write(path, os.path.relpath(path, tmp_path / name))
  manual = tmp_path / 'manual'
  shutil.copytree(tmp_path / 'manual_A', manual)
  d = tmp_path / 'tfds'
  builder = data.prepare(esc10_config(manual, d), RATE)
  assert len(builder.as_data_source(split='fold1')) == 4
  shutil.copy(tmp_path / 'manual_B' / 'ESC-50-master.zip', manual / 'ESC-50-master.zip')
  with pytest.raises(data.LayoutError, match=r'20 clips listed by .*\(40 clips listed by'):
    data.prepare(esc10_config(manual, d), RATE)
  # Prepared afresh elsewhere, the new archive's clips are read.
  fresh = data.prepare(esc10_config(manual, tmp_path / 'tfds2'), RATE)
  assert len(fresh.as_data_source(split='fold1')) == 8


def test_copy_prepared_skipping_bad_files_is_refused_without_skip_bad_files(tmp_path):
  audio = tmp_path / 'sounds'
  two_classes(str(audio))
  bad = audio / 'b' / 'broken.wav'
  bad.write_bytes(b'RIFF\x10\x00\x00\x00WAVEjunk' + bytes(range(256)))
  config = helpers.custom_config(f'audio_dir={audio},num_folds=2,skip_bad_files=True,'
                                 f'data_dir={tmp_path / "tfds"}')
  with pytest.warns(data.SkippedFilesWarning):
    data.prepare(config, RATE)
  config.skip_bad_files = False
  with pytest.raises(data.BadAudioFileError) as e:
    data.prepare(config, RATE)
  msg = str(e.value)
  assert msg.startswith(str(bad)) and 'skip_bad_files=True' in msg and '\n' not in msg, msg
  # The official datasets alike.
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'esc' / 'ESC-50-master', bad=('corrupt',))
  with pytest.warns(data.SkippedFilesWarning):
    data.prepare(esc10_config(tmp_path / 'esc', tmp_path / 'tfds', skip=True), RATE)
  with pytest.raises(data.BadAudioFileError, match=list(spec.bad)[0]):
    data.prepare(esc10_config(tmp_path / 'esc', tmp_path / 'tfds'), RATE)


def leftover_preparation(builder, name='incomplete.KILLED_1.0.0'):
  """A directory like the one a preparation killed with -9 leaves; returns its path."""
  leftover = os.path.join(os.path.dirname(os.fspath(builder.data_path)), name)
  os.makedirs(leftover)
  with open(os.path.join(leftover, 'esc50-fold1.array_record-00000-of-00001'), 'wb') as f:
    f.write(b'partial' * 1000)
  return leftover


def test_leftover_incomplete_preparations_are_deleted(tmp_path):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy')
  builder = data.get_builder('esc10', RATE, data_dir=str(tmp_path / 'tfds'))
  leftovers = [leftover_preparation(builder, n) for n in ('incomplete.KILLED_1.0.0',
                                                          'incomplete.AB12CD_1.0.0')]
  catalog.prepare_builder(builder, manual_dir=spec.root)
  assert builder.is_prepared()
  assert not any(os.path.exists(p) for p in leftovers)
  assert sorted(os.listdir(os.path.dirname(os.fspath(builder.data_path)))) == ['1.0.0']


def test_live_preparation_is_waited_for_and_its_directory_kept(tmp_path):
  spec = fixtures_audio.write_esc50_layout(tmp_path / 'copy')
  d = str(tmp_path / 'tfds')
  waiter = data.get_builder('esc10', RATE, data_dir=d)
  live_dir = leftover_preparation(waiter, 'incomplete.LIVE01_1.0.0')
  # Another process is preparing: it holds the config's lock (flock; gone when it dies).
  lock = catalog._lock_path(waiter)  # pylint: disable=protected-access
  os.makedirs(os.path.dirname(lock), exist_ok=True)
  fd = os.open(lock, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  errors = []

  def prepare():
    try:
      catalog.prepare_builder(waiter, manual_dir=spec.root)
    except BaseException as e:  # pylint: disable=broad-except
      errors.append(e)
  thread = threading.Thread(target=prepare)
  thread.start()
  try:
    time.sleep(2.0)
    assert thread.is_alive() and os.path.isdir(live_dir) and not waiter.is_prepared()
    # The other process finishes (its incomplete directory becomes the version directory).
    other = data.get_builder('esc10', RATE, data_dir=d)
    other.download_and_prepare(
        download_config=data.catalog.tfds.download.DownloadConfig(manual_dir=spec.root),
        file_format=catalog.FILE_FORMAT)
    shutil.rmtree(live_dir)
  finally:
    os.close(fd)
  thread.join(timeout=300)
  assert not thread.is_alive() and not errors, errors
  # The waiter prepared nothing itself and reads what the other one wrote.
  assert waiter.is_prepared() and len(waiter.as_data_source(split='fold1')) == 4
  assert sorted(os.listdir(os.path.dirname(os.fspath(waiter.data_path)))) == ['1.0.0']


# ------------------------------------------------------------------------------------------------
# 4. Classes emptied by skipped files
# ------------------------------------------------------------------------------------------------
def skipping_folder(root):
  """Classes a (4 clips) and b (2 clips, the first by name unreadable), 2 folds assigned:
  fold 1 = a/clip00, a/clip01, b/good; fold 2 = a/clip02, a/clip03, b/0bad (skipped)."""
  for i in range(4):
    tone_file(os.path.join(root, 'a', f'clip{i:02d}.wav'), 330.0, seed=i)
  tone_file(os.path.join(root, 'b', 'good.wav'), 1500.0, seed=7)
  bad = os.path.join(root, 'b', '0bad.wav')
  with open(bad, 'wb') as f:
    f.write(b'RIFF\x10\x00\x00\x00WAVEjunk' + bytes(range(256)))
  return bad


def test_class_without_training_clips_is_refused_naming_class_and_fold(tmp_path):
  audio = str(tmp_path / 'sounds')
  bad = skipping_folder(audio)
  config = helpers.custom_config(f'audio_dir={audio},{TINY},skip_bad_files=True,fold=1,'
                                 f'data_dir={tmp_path / "tfds"}')
  with pytest.warns(data.SkippedFilesWarning):
    with pytest.raises(data.LayoutError) as e:
      train.train_and_evaluate(config, str(tmp_path / 'run'))
  msg = str(e.value)
  assert "class 'b' has no training clip when fold 1 is the test fold" in msg, msg
  assert bad in msg and '\n' not in msg, msg
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_skipped_files_and_classes_without_test_clips_are_in_results(tmp_path, caplog):
  audio = str(tmp_path / 'sounds')
  bad = skipping_folder(audio)
  config = helpers.custom_config(f'audio_dir={audio},{TINY},skip_bad_files=True,fold=2,'
                                 f'data_dir={tmp_path / "tfds"}')
  with pytest.warns(data.SkippedFilesWarning):
    r = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert r['status'] == 'finished' and r['classes_without_test_clips'] == ['b']
  assert r['class_clips'] == {'train': [2, 1], 'test': [2, 0]}
  assert [(s['path'], s['fold'], s['class']) for s in r['skipped_files']] == [(bad, 2, 'b')]
  # Again on the prepared copy (nothing skipped now): the record is the same.
  with caplog.at_level(logging.WARNING):
    r2 = train.train_and_evaluate(config, str(tmp_path / 'run2'))
  assert r2['skipped_files'] == r['skipped_files']
  saved = helpers.read_json(tmp_path / 'run2' / 'results.json')
  assert saved['skipped_files'] == r['skipped_files']
  assert saved['classes_without_test_clips'] == ['b']
  text = caplog.text
  assert "class(es) 'b' have no clip in test fold 2" in text and '1 bad file(s)' in text, text


def test_workdir_written_before_a_new_config_field_still_resumes():
  """A config.json from before `model.precision` existed matches the field's old behaviour
  (float32) and nothing else."""
  from intermix_jax import workdir as wd  # pylint: disable=g-import-not-at-top
  stored = {'model': {'width': 1.0}, 'seed': 0}
  assert wd.config_differences(stored, {'model': {'width': 1.0, 'precision': 'float32'},
                                        'seed': 0}) == []
  diffs = wd.config_differences(stored, {'model': {'width': 1.0, 'precision': 'bfloat16'},
                                         'seed': 0})
  assert len(diffs) == 1 and diffs[0].startswith('model.precision')


def test_workdir_written_before_mixing_pairing_resumes_only_with_shared_pairs():
  """Before `mixing.pairing` every strategy mixed shared pairs: such a workdir resumes when the
  current config resolves to shared pairs (InterMix's default None; BC's explicit 'shared'), and
  is refused for BC's new default (independent pairs). Loading it (predict, adversarial) sees
  shared pairs, so its method label stays 'bc[shared-pairs]'."""
  from intermix_jax import mixing, workdir as wd  # pylint: disable=g-import-not-at-top

  def stored(strategy):
    return {'strategy': strategy, 'mixing': {'eligible_layers': None, 'p_weighting': True}}

  def now(strategy, pairing):
    return {'strategy': strategy, 'mixing': {'eligible_layers': None, 'p_weighting': True,
                                             'pairing': pairing}}
  assert wd.config_differences(stored('intermix'), now('intermix', None)) == []
  assert wd.config_differences(stored('standard'), now('standard', None)) == []
  assert wd.config_differences(stored('bc'), now('bc', 'shared')) == []
  diffs = wd.config_differences(stored('bc'), now('bc', None))
  assert len(diffs) == 1 and diffs[0].startswith('mixing.pairing'), diffs
  assert wd.config_differences(stored('intermix'), now('intermix', 'independent')) != []
  loaded = wd.with_added_fields(stored('bc'))
  assert loaded['mixing']['pairing'] == 'shared' and 'pairing' not in stored('bc')['mixing']
  cfg = type('C', (), {'strategy': 'bc', 'mixing': loaded['mixing']})
  assert mixing.build_strategy(cfg).label() == 'bc[shared-pairs]'


# ------------------------------------------------------------------------------------------------
# Issue 27 item 3: a source at another rate than the backbone's
# ------------------------------------------------------------------------------------------------
def test_a_16khz_source_for_a_22khz_backbone_is_warned_once_recorded_and_a_deviation(
    tmp_path, caplog):
  """A real 16 kHz copy of ESC-10 (every WAV written at 16 kHz) trained by PiczakCNN (22.05 kHz):
  upsampled, said once in one line, in the prepared copy, dataset.json, results.json and the
  report's protocol deviations."""
  from intermix_jax import report  # pylint: disable=g-import-not-at-top
  copy = fixtures_audio.write_esc50_layout(tmp_path / 'ESC-50-16k',
                                           formats=((16000, 1, 'PCM_16'),))
  assert {sf.info(r.path).samplerate for r in copy.records} == {16000}
  config = helpers.repo_config('esc10.py', (
      'backbone=piczakcnn,strategy=standard,model.width=0.25,model.fc_units=32,batch_size=4,'
      'steps_per_epoch=1,num_epochs=1,num_eval_crops=2,eval_batch_size=4,eval_every_epochs=1,'
      f'checkpoint_every_epochs=1,manual_dir={copy.root},data_dir={tmp_path / "tfds"}'))
  workdir = str(tmp_path / 'run')
  with caplog.at_level(logging.WARNING):
    r = train.train_and_evaluate(config, workdir)
  assert r['status'] == 'finished'
  notes = [rec.getMessage() for rec in caplog.records if 'resampled to' in rec.getMessage()]
  assert len(notes) == 1 and '\n' not in notes[0], notes
  assert notes[0] == (
      f'{copy.root}: source audio at 16000 Hz resampled to 22050 Hz, the backbone\'s rate: '
      'upsampled from 16000 Hz, so nothing above 8000 Hz (the source\'s Nyquist frequency) is '
      'real signal (source_sample_rates in dataset.json and results.json)')
  clips = len([c for c in copy.records if c.target in (0, 1, 20, 38)])  # the ESC-10 classes
  stored = helpers.read_json(os.path.join(workdir, 'dataset.json'))
  assert stored['sample_rate'] == 22050 and stored['source_sample_rates'] == {'16000': clips}
  saved = helpers.results(workdir)
  assert saved['dataset_identity']['source_sample_rates'] == {'16000': clips}
  # The prepared copy keeps it: reused by a new builder, and by a resumed run.
  builder = data.get_builder('esc10', 22050, data_dir=str(tmp_path / 'tfds'))
  catalog.prepare_builder(builder, manual_dir=copy.root)
  assert builder.info.metadata['source_sample_rates'] == {'16000': clips}
  devs = report.protocol_deviations(saved)
  assert [d for d in devs if d.startswith('source audio')] == [
      'source audio 16000 Hz upsampled to 22050 Hz (protocol 44100 Hz, downsampled where needed)']
  # The official rate (downsampled to the backbone's) is the protocol, as is a backbone at the
  # source's rate.
  for rates, rate in (({'44100': clips}, 22050), ({'16000': clips}, 16000)):
    run = dict(saved, dataset_identity=dict(saved['dataset_identity'], sample_rate=rate,
                                            source_sample_rates=rates))
    assert not [d for d in report.protocol_deviations(run) if d.startswith('source audio')]
