"""configs/*.py and config_lib (declared arguments, typed fields after the colon), the checks
(config_checks), the one batch rule, the workdir guard."""
import json
import os
import re
import runpy
import subprocess
import sys

import ml_collections
from ml_collections import config_flags
from absl import flags
import pytest

from intermix_jax import config_checks, config_lib, mixing, models, workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, arg=None):
  return runpy.run_path(os.path.join(ROOT, 'configs', f'{name}.py'))['get_config'](arg)


# The docs/method.md §5 table for standard training, written out independently:
# (epochs, lr, schedule, warmup).
PROTOCOL_TABLE = {
    ('envnet', 'esc50'): (600, 0.01, (0.5, 0.75), 0),
    ('envnet', 'esc10'): (600, 0.01, (0.5, 0.75), 0),
    ('envnet', 'urbansound8k'): (400, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'esc50'): (1000, 0.1, (0.3, 0.6, 0.9), 10),
    ('envnetv2', 'esc10'): (600, 0.01, (0.5, 0.75), 0),
    ('envnetv2', 'urbansound8k'): (600, 0.1, (0.3, 0.6, 0.9), 10),
}


@pytest.mark.parametrize('backbone,dataset', sorted(PROTOCOL_TABLE))
def test_spec_defaults_per_backbone_and_dataset(backbone, dataset):
  c = load(dataset, f'backbone={backbone}')
  assert (c.num_epochs, c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == PROTOCOL_TABLE[
      (backbone, dataset)]
  assert c.dataset == dataset and c.backbone == backbone
  assert (c.opt.momentum, c.opt.nesterov, c.opt.weight_decay, c.batch_size) == (0.9, True, 5e-4, 64)
  assert c.double_epochs_for_mixing
  config_checks.validate(c)


@pytest.mark.parametrize('name', ['esc50', 'esc10', 'urbansound8k', 'demo', 'custom_cpu'])
def test_every_config_loads_validates_and_documents_its_command(name):
  c = load(name)
  config_checks.validate(c)
  doc = runpy.run_path(os.path.join(ROOT, 'configs', f'{name}.py'))['__doc__']
  assert 'python -m intermix_jax.main' in doc and f'configs/{name}.py' in doc
  assert 'error' in doc.lower()  # the expected result


def test_custom_cpu_recipe_loads_validates_and_is_the_documented_command():
  """configs/custom_cpu.py (issue 27 item 6): the small-CPU recipe for your own short sounds
  loads, validates, keeps configs/custom.py's arguments, and docs/own_data_and_models.md's
  measured command uses it with arguments that load (the 10-minute training itself is not run)."""
  c = load('custom_cpu', 'audio_dir=/data/fsdd,metadata_csv=/data/fsdd.csv,fold=1')
  config_checks.validate(c)
  assert (c.dataset, c.backbone, c.strategy, c.fold) == ('custom', 'piczakcnn', 'standard', 1)
  assert (c.audio_dir, c.metadata_csv, c.num_folds) == ('/data/fsdd', '/data/fsdd.csv', 5)
  assert (c.model.width, c.model.fc_units, c.num_epochs, c.batch_size) == (0.5, 256, 60, 64)
  assert (c.opt.lr, tuple(c.opt.schedule), c.opt.warmup_epochs) == (0.01, (0.5, 0.75), 0)
  # Every field can still be set after the colon; a mixing strategy doubles the epochs as usual.
  c = load('custom_cpu', 'strategy=intermix,num_epochs=10,model.width=1.0,num_folds=3')
  config_checks.validate(c)
  assert (c.strategy, c.num_epochs, c.model.width, c.num_folds) == ('intermix', 10, 1.0, 3)
  doc = open(os.path.join(ROOT, 'docs', 'own_data_and_models.md')).read()
  commands = re.findall(r'--config=configs/custom_cpu\.py:(\S+)', doc)
  assert commands, 'docs/own_data_and_models.md shows no configs/custom_cpu.py command'
  for arg in commands:
    config_checks.validate(load('custom_cpu', arg))


def test_overrides_are_typed():
  c = load('esc50', 'backbone=envnet,strategy=bc,fold=3,seed=2,opt.lr=1,model.width=0.5,'
                    'strong_augment=true,mixing.eligible_layers=(1,2),opt.schedule=(0.4,0.8),'
                    'data_dir=/tmp/d,manual_dir=None,steps_per_epoch=7')
  assert c.backbone == 'envnet' and c.strategy == 'bc'
  assert c.fold == 3 and isinstance(c.fold, int) and c.seed == 2
  assert c.opt.lr == 1.0 and isinstance(c.opt.lr, float)
  assert c.model.width == 0.5 and c.strong_augment is True
  assert c.mixing.eligible_layers == (1, 2) and c.opt.schedule == (0.4, 0.8)
  assert c.data_dir == '/tmp/d' and c.manual_dir is None and c.steps_per_epoch == 7
  assert load('esc10', 'fold=all').fold == 'all'
  assert load('esc10', 'mixing.eligible_layers=2').mixing.eligible_layers == (2,)


def test_explicit_overrides_win_over_the_spec_row_whatever_their_order():
  c = load('esc50', 'opt.lr=0.05,num_epochs=3,backbone=envnet')
  assert c.backbone == 'envnet' and c.opt.lr == 0.05 and c.num_epochs == 3
  assert c.opt.schedule == (0.5, 0.75)  # the rest of envnet's row
  assert c.opt_defaults_from == 'envnet/esc50'


def test_unknown_key_is_rejected_with_the_valid_ones():
  with pytest.raises(ValueError) as e:
    load('esc50', 'learning_rate=0.1')
  msg = str(e.value)
  assert "'learning_rate'" in msg and 'opt.lr' in msg and 'backbone' in msg and 'mixing.alpha' in msg


@pytest.mark.parametrize('arg,field', [('seed=abc', 'seed'), ('opt.lr=fast', 'opt.lr'),
                                       ('strong_augment=maybe', 'strong_augment'),
                                       ('batch_size=6.5', 'batch_size'), ('oops', 'oops')])
def test_badly_typed_override_names_the_field(arg, field):
  with pytest.raises(ValueError, match=field):
    load('esc50', arg)


def test_split_top_level_keeps_brackets_and_quotes():
  assert config_lib.split_top_level("a=(1,2),b='x,y',c=[3,(4,5)]") == [
      'a=(1,2)', "b='x,y'", 'c=[3,(4,5)]']


def test_command_line_single_field_overrides():
  def parse(*args):
    argv = ['prog', *args]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config

  c = parse(f'--config={ROOT}/configs/esc10.py:backbone=envnet,fold=all', '--config.opt.lr=0.05',
            '--config.fold=2', '--config.mixing.eligible_layers=(1,3)')
  assert c.backbone == 'envnet' and c.opt.lr == 0.05 and c.fold == 2
  assert tuple(c.mixing.eligible_layers) == (1, 3)
  assert parse(f'--config={ROOT}/configs/esc10.py', '--config.fold=all').fold == 'all'


# --- config_checks: one-line errors naming the field and the valid values ----------------------
BAD = [
    ('backbone', 'resnet', ('envnetv2', 'm18')),
    ('strategy', 'cutmix', ('intermix', 'standard')),
    ('dataset', 'audioset', ('esc50', 'urbansound8k')),
    ('fold', 6, ('1..5', "'all'")),
    ('fold', 0, ('1..5',)),
    ('fold', 'some', ("'all'",)),
    ('nan_policy', 'ignore', ('stop', 'skip')),
    ('batch_size', 63, ('even',)),
    ('batch_size', 0, ('>= 1',)),
    ('opt.lr', -0.1, ('> 0',)),
    ('opt.momentum', 1.0, ('< 1',)),
    ('opt.weight_decay', -1e-4, ('>= 0',)),
    ('opt.schedule', (0.6, 0.3), ('increasing',)),
    ('opt.warmup_epochs', -1, ('>= 0',)),
    ('num_epochs', 0, ('>= 1',)),
    ('eval_every_epochs', 0, ('>= 1',)),
    ('keep_checkpoints', 0, ('>= 1',)),
    ('num_eval_crops', 0, ('>= 1',)),
    ('eval_batch_size', 0, ('>= 1',)),
    ('steps_per_epoch', 0, ('>= 1',)),
]


@pytest.mark.parametrize('field,value,valid', BAD, ids=[f'{f}={v!r}' for f, v, _ in BAD])
def test_bad_value_gives_one_line_error_naming_field_and_valid_values(field, value, valid):
  c = load('esc50')
  config_lib.set_field(c, field, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.validate(c)
  msg = str(e.value)
  assert f'config.{field}=' in msg and 'valid:' in msg and '\n' not in msg
  for v in valid:
    assert v in msg, msg


# The model and mixing options are checked by their constructors (models.get_model,
# mixing.get_strategy: their tests hold the valid values); validate gives the constructor's error
# in one line naming the field, whatever the strategy (alpha is mixup's; the default is intermix).
COMPONENT_BAD = [
    ('model.width', 0.0, lambda: models.get_model('envnetv2', 2, width=0.0)),
    ('model.fc_units', 0, lambda: models.get_model('envnetv2', 2, fc_units=0)),
    ('model.precision', 'fp8', lambda: models.get_model('envnetv2', 2, precision='fp8')),
    ('mixing.signed_mode', 'abs', lambda: mixing.get_strategy('intermix', signed_mode='abs')),
    ('mixing.alpha', 0.0, lambda: mixing.get_strategy('mixup', alpha=0.0)),
    ('mixing.eligible_layers', (), lambda: mixing.get_strategy('intermix', eligible_layers=())),
    ('mixing.eligible_layers', (1, -1), lambda: mixing.get_strategy('bc', eligible_layers=(1, -1))),
]


@pytest.mark.parametrize('field,value,make', COMPONENT_BAD,
                         ids=[f'{f}={v!r}' for f, v, _ in COMPONENT_BAD])
def test_bad_option_gives_its_constructors_error_naming_the_field(field, value, make):
  with pytest.raises(ValueError) as direct:
    make()
  c = load('esc50')
  config_lib.set_field(c, field, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.validate(c)
  msg = str(e.value)
  assert msg == f'config.{field}={value!r}: {direct.value}' and '\n' not in msg


def test_checks_that_need_the_model_and_the_devices():
  c = load('esc50', 'mixing.eligible_layers=(1,5)')
  config_checks.validate(c)  # without the backbone's K nothing to say
  with pytest.raises(config_checks.ConfigError, match=r'config.mixing.eligible_layers=.*5.*0\.\.4'):
    config_checks.validate(c, num_mix_points=5)
  c = load('esc50', 'batch_size=12')
  with pytest.raises(config_checks.ConfigError,
                     match=r'config.batch_size=12 .*8 devices.*multiples of 16'):
    config_checks.validate(c, device_count=8)
  with pytest.raises(config_checks.ConfigError, match=r'config.batch_size=12 .*multiples of 8'):
    config_checks.validate(c, device_count=4)  # 3 sounds per device: pairs would straddle
  config_checks.validate(load('esc50', 'batch_size=12,strategy=standard'), device_count=4)
  with pytest.raises(config_checks.ConfigError, match=r'config.batch_size=12 .*5 processes'):
    config_checks.validate(c, process_count=5)
  with pytest.raises(config_checks.ConfigError, match=r"config.fold=4 .*'synthetic'.*1\.\.3"):
    config_checks.validate(load('demo', 'fold=4'), num_folds=3)


def test_one_batch_rule_for_every_cut():
  """config_lib.check_batch_split: what validate and the data loaders both apply."""
  check = config_lib.check_batch_split
  check(12, pairs=True, processes=2, devices=6 // 3)
  check(12, pairs=False, processes=3, devices=4)
  for kwargs, words in ((dict(pairs=True), 'must be even'),
                        (dict(pairs=False, processes=5), 'not divisible by the 5 processes'),
                        (dict(pairs=True, processes=4), '3 sounds per process'),
                        (dict(pairs=True, devices=4), 'multiples of 8')):
    with pytest.raises(config_checks.ConfigError, match=words):
      check(13 if 'even' in words else 12, **kwargs)
  with pytest.raises(config_checks.ConfigError, match=r'config.eval_batch_size=0 .*>= 1'):
    check(0, pairs=False, field='eval_batch_size')


def test_config_files_are_thin_and_load_from_any_directory(tmp_path):
  """configs/ is a package of thin files over intermix_jax.config_lib: no runpy, no base.py
  imported by path; a file loads from another working directory (an installed library)."""
  files = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, names in os.walk(
      os.path.join(ROOT, 'configs')) for f in names if f.endswith('.py')]
  assert 'configs/__init__.py' in files and 'configs/table1/__init__.py' in files
  for f in files:
    text = open(os.path.join(ROOT, f)).read()
    assert 'runpy' not in text and 'base.py\'' not in text, f
  script = (f'import runpy; c = runpy.run_path({os.path.join(ROOT, "configs", "table3.py")!r})'
            "['get_config']('strategy=bc'); print(c.dataset, c.strategy, c.num_epochs)")
  out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
  assert out.stdout.split() == ['esc10', 'bc', '600'], out.stderr[-2000:]


def test_protocol_row_comes_from_the_declared_arguments_only():
  c = load('esc50', 'backbone=envnet')
  assert config_lib.row_note(c) is None
  c.backbone = 'envnetv2'  # as --config.backbone=envnetv2 does, after the file
  assert 'envnet/esc50' in config_lib.row_note(c) and 'after the colon' in config_lib.row_note(c)
  assert config_lib.row_note(load('demo')) is None  # synthetic takes the ESC-50 row


# --- workdir guard --------------------------------------------------------------------------------
def test_workdir_refuses_a_different_config(tmp_path):
  d = str(tmp_path / 'run')
  workdir.check_or_store_config(d, load('esc10'))
  workdir.check_or_store_config(d, load('esc10'))  # same config: fine
  workdir.check_or_store_config(d, load('esc10', 'log_every_steps=7,nan_policy=skip'))  # bookkeeping
  with pytest.raises(workdir.WorkdirConfigError) as e:
    workdir.check_or_store_config(d, load('esc10', 'opt.lr=0.5,seed=3'))
  msg = str(e.value)
  assert d in msg and 'opt.lr: 0.01 (workdir) vs 0.5 (now)' in msg and 'seed: 0' in msg
  assert '\n' not in msg


def test_a_workdir_whose_config_has_a_removed_field_resumes(tmp_path):
  d = str(tmp_path / 'old')
  stored = workdir.config_to_dict(load('esc10'))
  stored['model']['conv_impl'] = 'cpu'  # config.json of a run before model.conv_impl was removed
  os.makedirs(d)
  with open(os.path.join(d, workdir.CONFIG_FILE), 'w') as f:
    json.dump(stored, f)
  workdir.check_or_store_config(d, load('esc10'))
  with pytest.raises(workdir.WorkdirConfigError, match='seed'):
    workdir.check_or_store_config(d, load('esc10', 'seed=1'))


def test_a_comma_inside_a_value_needs_quotes_and_the_error_says_how():
  c = load('esc10', 'manual_dir="/data/a,b",fold=2')
  assert (c.manual_dir, c.fold) == ('/data/a,b', 2)
  with pytest.raises(ValueError) as e:
    load('esc10', 'manual_dir=/data/a,b,c,fold=2')
  msg = str(e.value)
  assert "config override 'b' is not key=value" in msg and '\n' not in msg
  assert 'manual_dir="/data/a,b,c"' in msg and "--config='configs/x.py:" in msg


def test_a_schedule_that_never_reaches_its_lr_is_warned_in_one_line_before_training(
    monkeypatch, caplog):
  """Issue 27 item 4: EnvNet-v2's 10 warm-up epochs cover a 2-epoch run (the LR stays at
  opt.lr * 0.1): one warning line naming the fields, before any data or training."""
  import logging  # pylint: disable=g-import-not-at-top
  from intermix_jax import train  # pylint: disable=g-import-not-at-top

  class Stop(Exception):
    pass

  def no_training(*args):
    del args
    raise Stop()

  monkeypatch.setattr(train, '_train_fold', no_training)
  c = load('esc50', 'backbone=envnetv2,strategy=standard,num_epochs=2')
  with caplog.at_level(logging.WARNING), pytest.raises(Stop):
    train.train_and_evaluate(c, '/nonexistent/never/written')
  notes = [r.getMessage() for r in caplog.records if 'warmup_epochs' in r.getMessage()]
  assert notes == [
      'config.opt.warmup_epochs=10 is not shorter than the 2 epochs trained (config.num_epochs=2):'
      ' every epoch runs at the warm-up LR 0.01 (config.opt.lr * 0.1), never at config.opt.lr=0.1;'
      ' lower opt.warmup_epochs or raise num_epochs']
  note = config_checks.schedule_note(load('esc50', 'backbone=envnetv2,num_epochs=5'))
  assert 'not shorter than the 10 epochs trained (config.num_epochs=5, doubled for mixing)' in note
  note = config_checks.schedule_note(load('esc50', 'backbone=envnetv2,num_epochs=20,'
                                               'strategy=standard'))
  assert note == (
      'config.opt.schedule=(0.3, 0.6, 0.9) decays the LR after epoch 6 of the 20 epochs trained '
      '(config.num_epochs=20), before the first epoch past the config.opt.warmup_epochs=10 '
      'warm-up epochs: no epoch runs at config.opt.lr=0.1; lower opt.warmup_epochs, raise '
      'num_epochs or move the first decay later'), note
  for arg in ('backbone=envnetv2', 'backbone=envnetv2,num_epochs=40,strategy=standard',
              'backbone=envnet,num_epochs=1'):
    assert config_checks.schedule_note(load('esc50', arg)) is None, arg


# ------------------------------------------------------------------------------------------------
# Issue 27 item 7: every field described, listed by --list_config and in docs/config.md
# ------------------------------------------------------------------------------------------------
CONFIG_FILES = sorted(os.path.relpath(os.path.join(d, f), os.path.join(ROOT, 'configs'))[:-3]
                      for d, _, names in os.walk(os.path.join(ROOT, 'configs'))
                      for f in names if f.endswith('.py') and f != '__init__.py')


def test_every_field_of_every_config_file_has_a_one_line_description():
  fields = config_lib.FIELDS
  assert sorted(f.key for f in fields) == config_lib.valid_keys(config_lib.base_config())
  for f in fields:
    assert f.description.strip() and '\n' not in f.description, f
  assert len(CONFIG_FILES) > 10
  for name in CONFIG_FILES:
    c = load(name, 'audio_dir=/a' if name == 'custom' else None)
    lines = [l for l in config_lib.describe(c).splitlines() if l and not l.startswith('# ---')]
    assert sorted(l.split(' = ', 1)[0] for l in lines) == config_lib.valid_keys(c), name
    for line in lines:
      assert '  # ' in line and line.split('  # ', 1)[1].strip(), (name, line)
      assert 'no description' not in line, (name, line)


def test_list_config_prints_every_field_and_docs_config_md_is_its_output():
  proc = subprocess.run([sys.executable, '-m', 'intermix_jax.main', '--list_config'], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and proc.stdout == config_lib.describe(), proc.stderr[-2000:]
  assert "\nopt.warmup_epochs = 10  # first epochs at LR0 * 0.1 (not doubled for mixing)\n" in (
      proc.stdout)
  custom = load('custom')
  with open(os.path.join(ROOT, 'docs', 'config.md')) as f:
    blocks = [b.split('```', 1)[0] for b in f.read().split('```text\n')[1:]]
  assert blocks == [config_lib.describe(), config_lib.describe(custom).split('\n\n')[-1]], (
      'docs/config.md is not the output of `python -m intermix_jax.main --list_config` (first '
      'block) and of its --config=configs/custom.py last section (second block): paste them in')
