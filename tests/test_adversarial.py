"""intermix_jax.adversarial: FGSM laws against independent references, masked 10-crop evaluation,
and the workdir command end to end (a checkpointed tiny EnvNet on the synthetic dataset)."""
import functools
import json
import os

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from intermix_jax import adversarial
from intermix_jax import losses
from intermix_jax import models
from intermix_jax import parallel
from intermix_jax import steps
from intermix_jax.models import cpu_ops
from test_cli_errors import read_only_dir  # pylint: disable=unused-import

MESH = parallel.make_mesh(1)  # the jitted steps take their shardings on a mesh


@pytest.fixture(autouse=True)
def plain_convolutions():
  """lax.conv as written: the CPU rewrites (chosen on the CPU backend) compute the same maths but
  compile ~5x slower under these tests' grad/vmap."""
  with cpu_ops.force('plain'):
    yield


class Linear(nn.Module):
  """Softmax regression on the waveform: logits = x W + b (the eval-call contract of the backbones)."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x, train=False, mix=None):
    del train, mix
    return nn.Dense(self.num_classes)(x)


class State(flax.struct.PyTreeNode):
  params: dict
  batch_stats: dict


def _linear(t=32, c=4, seed=0):
  model = Linear(c)
  params = model.init(jax.random.key(seed), jnp.zeros((1, t)))['params']
  return model, State(params=params, batch_stats={})


def _analytic_grad(params, x, y):
  """d CE(softmax(x W + b), y) / dx = (softmax - onehot) W^T, in float64 numpy."""
  w = np.asarray(params['Dense_0']['kernel'], np.float64)
  b = np.asarray(params['Dense_0']['bias'], np.float64)
  z = np.asarray(x, np.float64) @ w + b
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  p[np.arange(len(y)), y] -= 1.0
  return p @ w.T


def test_fgsm_step_is_eps_times_sign_of_the_analytic_gradient():
  model, state = _linear()
  x = jax.random.normal(jax.random.key(1), (5, 32)) * 0.1
  y = jnp.array([0, 1, 2, 3, 1])
  loss_fn = lambda xx: losses.cross_entropy(model.apply({'params': state.params}, xx), y)
  g = _analytic_grad(state.params, x, y)
  for eps in (1e-2, 1e-5):
    step = np.asarray(adversarial.fgsm(loss_fn, x, eps) - x, np.float64)
    sure = np.abs(g) > 1e-6  # entries whose sign float32 cannot get wrong
    assert sure.mean() > 0.9
    ulp = 2 * float(np.spacing(np.float32(np.abs(x).max())))  # float32 rounding of x + step
    np.testing.assert_array_equal(np.sign(step[sure]), np.sign(g[sure]))
    np.testing.assert_allclose(step[sure], eps * np.sign(g[sure]), rtol=0, atol=ulp)
    assert np.all(np.abs(step) <= eps + ulp)


@pytest.mark.parametrize('eps', [1e-5, 1e-3, 1e-1, 1.0])
def test_fgsm_increases_a_convex_loss_for_every_eps(eps):
  # CE of a linear model is convex in x: loss(x + d) >= loss(x) + g.d = loss(x) + eps |g|_1.
  model, state = _linear(seed=3)
  x = jax.random.normal(jax.random.key(2), (6, 32)) * 0.1
  y = jnp.array([3, 2, 1, 0, 0, 1])
  loss_fn = lambda xx: losses.cross_entropy(model.apply({'params': state.params}, xx), y)
  g = _analytic_grad(state.params, x, y) / len(y)
  before, after = float(loss_fn(x)), float(loss_fn(adversarial.fgsm(loss_fn, x, eps)))
  assert after > before
  assert after >= before + 0.99 * eps * np.abs(g).sum()


def _tiny_piczak():
  return models.get_model('piczakcnn', 3, width=0.05, fc_units=8)


def _tiny_state(model, seed=0):
  variables = jax.jit(lambda k: model.init({'params': k, 'dropout': jax.random.key(1)},
                                            jnp.zeros((1, model.input_length)), train=False))(
                                                jax.random.key(seed))
  # Non-trivial running statistics, so eval mode differs from batch statistics.
  bs = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(jax.random.key(7), v.shape),
                    variables['batch_stats'])
  return State(params=variables['params'], batch_stats=bs)


@pytest.fixture(scope='module')
def piczak():
  model = _tiny_piczak()
  state = _tiny_state(model)
  b, crops, t = 3, 2, model.input_length
  x = 0.05 * jax.random.normal(jax.random.key(5), (b, crops, t))
  y = jnp.array([0, 2, 1], jnp.int32)
  return model, state, x, y


def test_crop_gradient_is_each_crops_own_gradient(piczak):
  model, state, x, y = piczak
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  mask = jnp.array([True, True, False])
  crop_loss, grad = jax.jit(functools.partial(adversarial.crop_gradients, model=model))(
      variables, x, y, mask)

  def one(xc, label):  # one crop alone, through the losses module
    return losses.cross_entropy(model.apply(variables, xc[None], train=False), label[None])
  ref_loss, ref_grad = jax.jit(jax.vmap(jax.vmap(jax.value_and_grad(one), (0, None))))(x, y)
  chex.assert_trees_all_close(crop_loss, ref_loss, rtol=1e-4, atol=1e-5)
  scale = float(jnp.max(jnp.abs(ref_grad[:2])))
  chex.assert_trees_all_close(grad[:2], ref_grad[:2], atol=1e-3 * scale)
  assert np.all(np.asarray(grad[2]) == 0)  # masked row: no gradient, hence no perturbation


def test_eps_zero_row_is_the_trainers_clean_evaluation(piczak):
  model, state, x, y = piczak
  mask = jnp.array([True, True, False])
  batch = dict(x=x, y=y, mask=mask)
  out = adversarial.attack_step_on(model, (1e-4, 1e-5), MESH)(state, batch)
  chex.assert_shape(out['pred'], (3, 3))
  full = steps.TrainState(step=jnp.zeros((), jnp.int32), params=state.params,
                          batch_stats=state.batch_stats, opt_state=(),
                          nonfinite_count=jnp.zeros((), jnp.int32),
                          first_nonfinite_step=jnp.zeros((), jnp.int32))
  ref = steps.mesh_eval_step(model, MESH)(full, batch)
  np.testing.assert_array_equal(out['pred'][0], ref['pred'])
  assert int(out['num_correct'][0]) == int(ref['num_correct'])
  assert int(out['count']) == 2
  assert not np.any(np.asarray(out['correct'])[:, 2])  # the padded row never counts


def test_attack_raises_the_crop_loss_of_a_cnn(piczak):
  model, state, x, y = piczak
  mask = jnp.ones((3,), bool)
  out = adversarial.attack_step_on(model, (1e-4, 1e-5), MESH)(state, dict(x=x, y=y, mask=mask))
  clean, bigger, small = np.asarray(out['loss_sum'])
  assert small > clean and bigger > clean  # small steps along sign(grad): the loss rises


def test_padded_rows_change_nothing(piczak):
  model, state, x, y = piczak
  mask = jnp.array([True, False, True])
  eps = (1e-4, 1e-5)
  a = adversarial.attack_step_on(model, eps, MESH)(state, dict(x=x, y=y, mask=mask))
  x2 = x.at[1].set(jax.random.normal(jax.random.key(9), x.shape[1:]))  # other padding content
  y2 = y.at[1].set(0)
  b = adversarial.attack_step_on(model, eps, MESH)(state, dict(x=x2, y=y2, mask=mask))
  for k in ('num_correct', 'count', 'loss_sum'):
    np.testing.assert_array_equal(a[k], b[k])
  np.testing.assert_array_equal(np.asarray(a['pred'])[:, [0, 2]], np.asarray(b['pred'])[:, [0, 2]])


def test_parse_epsilons():
  assert adversarial.parse_epsilons('1e-2,1e-3') == (0.01, 0.001)
  for bad in ('', 'a', '0', '-1e-3', 'nan'):
    with pytest.raises(ValueError, match='--eps'):
      adversarial.parse_epsilons(bad)
  assert adversarial.eps_key(1e-5) == '1e-05' and adversarial.eps_key(1e-2) == '0.01'


def test_workdir_errors_name_the_problem(tmp_path):
  with pytest.raises(adversarial.AdversarialWorkdirError, match='config.json'):
    adversarial.load_workdir(str(tmp_path))
  (tmp_path / 'fold_1').mkdir()
  with pytest.raises(adversarial.AdversarialWorkdirError, match='fold_<k>'):
    adversarial.load_workdir(str(tmp_path))


@pytest.mark.parametrize('failure', ['read_only_out', 'data_moved'])
def test_data_and_write_errors_are_one_line_exit_1(failure, read_only_dir, tmp_path, monkeypatch,
                                                   capsys):
  """--out cannot be written after the attacks (a read-only directory), or the data moved
  (data.SourceUnavailableError): one line `error: ...` saying where, exit 1, no traceback."""
  from intermix_jax import data  # pylint: disable=g-import-not-at-top

  def evaluate(*args, **kwargs):
    del args, kwargs
    if failure == 'data_moved':
      raise data.SourceUnavailableError('no ESC-50 copy in /moved/esc50 (config.manual_dir)')
    return {'clean_error': 0.0}
  monkeypatch.setattr(adversarial, 'evaluate_workdir', evaluate)
  out = os.path.join(read_only_dir, 'adv.json')
  assert adversarial.main([f'--workdir={tmp_path}', f'--out={out}']) == 1
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  where = out if failure == 'read_only_out' else '/moved/esc50'
  assert where in lines[0], lines[0]
  if failure == 'read_only_out':
    assert 'the result could not be written' in lines[0] and '--out' in lines[0], lines[0]
  assert not os.path.exists(out)


def test_workdir_command_end_to_end(tmp_path, synthetic_data_dir, base_config):
  wd, final = helpers.synthetic_workdir(str(tmp_path), synthetic_data_dir, base_config)
  out = tmp_path / 'elsewhere' / 'adv.json'
  assert adversarial.main([f'--workdir={wd}', '--eps=1e-2,1e-4', f'--out={out}']) == 0
  r = json.loads(out.read_text())
  assert r['clean_error'] == pytest.approx(final, abs=1e-9)  # same checkpoint, same protocol
  assert r['results_final_error'] == pytest.approx(final)
  assert set(r['attacked_error']) == {'0.01', '0.0001'}
  assert r['num_test_examples'] == 60 and r['checkpoint_step'] == 3
  assert (r['dataset'], r['backbone'], r['fold'], r['method']) == ('synthetic', 'piczakcnn', 2,
                                                                   'intermix')
  assert r['mean_crop_loss']['0.0001'] > r['mean_crop_loss']['clean']
  assert not os.path.exists(os.path.join(wd, adversarial.RESULTS_FILE))  # --out elsewhere

  with open(os.path.join(wd, 'results.json')) as f:
    res = json.load(f)
  res['status'] = 'running'
  with open(os.path.join(wd, 'results.json'), 'w') as f:
    json.dump(res, f)
  assert adversarial.main([f'--workdir={wd}']) == 2  # unfinished: refused, names the status
  assert adversarial.main([f'--workdir={wd}', '--eps=1e-2,1e-4', '--allow_unfinished']) == 0
  assert os.path.exists(os.path.join(wd, adversarial.RESULTS_FILE))


def test_workdir_written_with_a_since_removed_config_field_loads(tmp_path, synthetic_data_dir,
                                                                  base_config):
  """config.json of an older version holding a field removed since (workdir.REMOVED_FIELDS, e.g.
  model.conv_impl): the workdir still loads (trained.load_workdir, shared with predict)."""
  from intermix_jax import workdir as workdir_lib
  wd, _ = helpers.synthetic_workdir(str(tmp_path), synthetic_data_dir, base_config)
  path = os.path.join(wd, 'config.json')
  with open(path) as f:
    stored = json.load(f)
  for key in workdir_lib.REMOVED_FIELDS:
    *parents, leaf = key.split('.')
    node = stored
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = 'cpu'
  with open(path, 'w') as f:
    json.dump(stored, f)
  run = adversarial.load_workdir(wd)
  assert run.step == 3 and run.config.backbone == 'piczakcnn'
  assert 'conv_impl' not in run.config.model
