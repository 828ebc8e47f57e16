"""intermix_jax.predict (issue 10) on a tiny workdir trained by the real command line on a custom
folder (tests/helpers.py): checkpoint + config loading, decoding as in training, the 10-crop
protocol, top-k, bad inputs, the command line and its exit codes.
"""
import json
import os
import shutil
import subprocess

import jax
import numpy as np
import pytest

import helpers
from intermix_jax import predict


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  r = helpers.custom_folder_run(tmp_path_factory)
  assert r['returncode'] == 0, r['stderr']
  return r


@pytest.fixture(scope='module')
def predictor(run):
  return predict.Predictor(run['workdir'])


@pytest.mark.filterwarnings('ignore:Sharding info not provided')
def test_restores_the_last_checkpoint_and_the_run_config(run, predictor):
  r = helpers.results(run['workdir'])
  assert predictor.step == r['total_steps'] == 2
  assert predictor.class_names == tuple(r['class_names'])
  assert (predictor.sample_rate, predictor.input_length, predictor.num_crops) == (16000, 24014, 3)
  ckpt = os.path.join(run['workdir'], 'checkpoints', str(predictor.step), 'state')
  from orbax import checkpoint as ocp  # the raw checkpoint, read independently
  raw = ocp.PyTreeCheckpointer().restore(ckpt)
  for a, b in zip(jax.tree.leaves(raw['params']), jax.tree.leaves(predictor.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_predictions_equal_the_trainers_last_evaluation(run, predictor):
  """The trainer evaluated the test fold with the final parameters: same files, same argmax."""
  p = helpers.results(run['workdir'])['predictions']
  paths = [os.path.join(run['audio_dir'], f) for f in p['filenames']]
  results, errors = predictor.predict_paths(paths, top_k=3)
  assert not errors and [x.path for x in results] == paths
  got = [predictor.class_names.index(x.top[0][0]) for x in results]
  assert got == p['preds']


def test_ten_crop_protocol_against_a_direct_reference(run, predictor):
  """Mean softmax over evenly spaced crops of the T/2-padded clip, written out independently."""
  rng = np.random.default_rng(0)
  clips = [rng.integers(-3000, 3000, n).astype(np.int16) for n in (5000, 24014, 40001, 7)]
  probs = predictor.probabilities(clips)   # 4 clips, eval batch 4: one batch; then 5 (padding)
  t, k = predictor.input_length, predictor.num_crops
  variables = {'params': predictor.state.params, 'batch_stats': predictor.state.batch_stats}
  apply = jax.jit(lambda v, x: predictor.model.apply(v, x, train=False))
  for clip, got in zip(clips, probs):
    padded = np.concatenate([np.zeros(t // 2), clip, np.zeros(t // 2)]) / 32768.0
    stride = (len(padded) - t) // (k - 1)
    crops = np.stack([padded[i * stride:i * stride + t] for i in range(k)]).astype(np.float32)
    logits = apply(variables, crops)
    want = np.mean(jax.nn.softmax(np.asarray(logits, np.float64), -1), 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  more = predictor.probabilities(clips + clips[:1])
  np.testing.assert_allclose(more[:4], probs, rtol=1e-5, atol=1e-7)


def test_bad_inputs_are_named_and_the_rest_classified(run, tmp_path, capsys):
  good = os.path.join(run['audio_dir'], 'beep', 'clip00.wav')
  broken = tmp_path / 'broken.wav'
  broken.write_bytes(b'RIFF\x00\x00\x00\x00WAVEnot really')
  empty_dir = tmp_path / 'empty'
  empty_dir.mkdir()
  missing = str(tmp_path / 'missing.flac')
  argv = [f'--workdir={run["workdir"]}', str(broken), good, missing, str(empty_dir),
          os.path.join(run['audio_dir'], 'whistle'), '--top_k', '2', '--json']
  assert predict.main(argv) == 1
  out, err = capsys.readouterr()
  doc = json.loads(out)
  assert [e['file'] for e in doc['errors']] == [str(broken), missing, str(empty_dir)]
  for name in (str(broken), missing, str(empty_dir)):
    assert name in err
  files = [p['file'] for p in doc['predictions']]
  assert files[0] == good and len(files) == 1 + helpers.CUSTOM_FILES_PER_CLASS
  assert all(f.startswith(os.path.join(run['audio_dir'], 'whistle')) for f in files[1:])
  for p in doc['predictions']:
    top = p['top_k']
    assert len(top) == 2 and top[0]['probability'] >= top[1]['probability']
    assert doc['class_names'][top[0]['label']] == top[0]['class']
  assert doc['checkpoint_step'] == 2 and doc['num_crops'] == 3


def test_workdir_errors_exit_2(run, tmp_path, capsys):
  cv = tmp_path / 'cv'
  os.makedirs(cv / 'fold_1')
  assert predict.main([f'--workdir={cv}', 'x.wav']) == 2
  assert 'fold=all' in capsys.readouterr().err
  assert predict.main([f'--workdir={tmp_path / "nowhere"}', 'x.wav']) == 2
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  shutil.copy(os.path.join(run['workdir'], 'config.json'), untrained)
  assert predict.main([f'--workdir={untrained}', 'x.wav']) == 2
  assert 'no readable checkpoint' in capsys.readouterr().err


def test_data_and_machine_errors_are_one_line_exit_1(tmp_path, monkeypatch, capsys):
  """A data error (e.g. the dataset's copy moved: data.LayoutError) or a machine's OSError naming
  its path: one line `error: ...`, exit 1, no traceback; any other error keeps its traceback."""
  from intermix_jax import data  # pylint: disable=g-import-not-at-top

  def failing(error):
    def predictor(workdir):
      raise error
    return predictor
  for error in (data.LayoutError('/moved/esc50: no meta/esc50.csv'),
                PermissionError(13, 'Permission denied', '/moved/sounds')):
    monkeypatch.setattr(predict, 'Predictor', failing(error))
    assert predict.main([f'--workdir={tmp_path}', 'x.wav']) == 1
    assert capsys.readouterr().err.startswith('error: /moved/'), error
  monkeypatch.setattr(predict, 'Predictor', failing(ZeroDivisionError('a bug')))
  with pytest.raises(ZeroDivisionError):
    predict.main([f'--workdir={tmp_path}', 'x.wav'])


def test_unreadable_checkpoint_is_reported_and_left_in_place(run, tmp_path, capsys):
  """Prediction is read-only: an unreadable checkpoint is not moved or deleted."""
  copy = tmp_path / 'copy'
  shutil.copytree(run['workdir'], copy)
  ckpt = copy / 'checkpoints'
  before = sorted(os.listdir(ckpt))
  for dirpath, _, files in os.walk(ckpt / before[-1] / 'state'):
    for f in files:
      with open(os.path.join(dirpath, f), 'wb') as out:
        out.write(b'not a checkpoint')
  assert predict.main([f'--workdir={copy}', 'x.wav']) == 2
  assert 'no readable checkpoint' in capsys.readouterr().err
  assert sorted(os.listdir(ckpt)) == before


def test_command_line_text_output(run, capsys):
  folder = os.path.join(run['audio_dir'], 'Low hum')
  assert predict.main([f'--workdir={run["workdir"]}', folder, '--top_k=1']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 * helpers.CUSTOM_FILES_PER_CLASS
  names = set(helpers.CUSTOM_CLASSES)
  for path_line, class_line in zip(lines[0::2], lines[1::2]):
    assert path_line.startswith(folder)
    name, prob = class_line.strip().rsplit(None, 1)
    assert name in names and 0 < float(prob) <= 1


def test_runs_as_a_module():
  """`python -m intermix_jax.predict` is wired (the full command is tested in-process above)."""
  proc = subprocess.run([helpers.PYTHON, '-m', 'intermix_jax.predict', '--help'],
                        capture_output=True, text=True, timeout=300, cwd=helpers.REPO)
  assert proc.returncode == 0, proc.stderr
  for word in ('--workdir', '--top_k', '--json', 'FILE_OR_DIR'):
    assert word in proc.stdout


# ------------------------------------------------------------------------------------------------
# Issue 18: corrupted checkpoints, truncated JSON files
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings('ignore:Sharding info not provided')
def test_corrupted_checkpoint_is_never_used_silently(run, tmp_path, capsys, caplog):
  """Flipped bytes in the checkpoint's data file (orbax restores them without complaint): the
  previous checkpoint predicts instead, with a warning; with none left, exit 2 in one line."""
  from orbax import checkpoint as ocp
  copy = tmp_path / 'copy'
  shutil.copytree(run['workdir'], copy)
  ckpt = copy / 'checkpoints'
  assert sorted(os.listdir(ckpt)) == ['2']
  shutil.copytree(ckpt / '2', ckpt / '1')  # an older checkpoint (same arrays) to fall back to
  saved = ocp.PyTreeCheckpointer().restore(str(ckpt / '2' / 'state'))
  helpers.corrupt_silently(str(ckpt / '2'), saved)
  before = sorted(os.listdir(ckpt))
  p = helpers.results(run['workdir'])['predictions']
  paths = [os.path.join(run['audio_dir'], f) for f in p['filenames']]
  assert predict.main([f'--workdir={copy}', '--json'] + paths) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc['checkpoint_step'] == 1
  names = doc['class_names']
  assert [names.index(x['top_k'][0]['class']) for x in doc['predictions']] == p['preds']
  warned = ' '.join(r.getMessage() for r in caplog.records)
  assert f'{ckpt / "2"} is corrupted' in warned and 'not the newest' in warned, warned
  assert sorted(os.listdir(ckpt)) == before  # read-only: nothing moved
  shutil.rmtree(ckpt / '1')
  assert predict.main([f'--workdir={copy}', paths[0]]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and 'no readable checkpoint' in err[0]
  assert f'{ckpt / "2"} is corrupted' in err[0], err


@pytest.mark.parametrize('name', ['results.json', 'config.json'])
def test_truncated_json_file_is_one_line_naming_it_and_exit_2(run, tmp_path, capsys, name):
  copy = tmp_path / 'copy'
  shutil.copytree(run['workdir'], copy)
  text = (copy / name).read_text()
  (copy / name).write_text(text[:len(text) // 2])  # as a full disk leaves it
  good = os.path.join(run['audio_dir'], 'beep', 'clip00.wav')
  assert predict.main([f'--workdir={copy}', good]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert err[0].startswith(f'error: {copy / name} is not valid JSON (line '), err
