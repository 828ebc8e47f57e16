"""The library's public surface: what the core imports (no harness), `__all__`, and `mix_point`
(channel-last tensors mixed exactly as their channel-first transpose)."""
import importlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import intermix_jax
from intermix_jax import mixing

CORE = ('intermix_jax', 'intermix_jax.audio', 'intermix_jax.mixing', 'intermix_jax.losses',
        'intermix_jax.melspec', 'intermix_jax.models')
HARNESS_PACKAGES = ('tensorflow_datasets', 'tensorflow', 'orbax', 'ml_collections', 'configs')


def test_core_imports_no_config_tfds_or_orbax_module():
  probe = textwrap.dedent(f"""
      import sys
      for name in {CORE!r}:
        __import__(name)
      print(' '.join(sorted(sys.modules)))
  """)
  loaded = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          check=True).stdout.split()
  harness = [m for m in loaded if any(m == p or m.startswith(p + '.') for p in HARNESS_PACKAGES)]
  assert not harness, harness
  ours = sorted(m for m in loaded if m.startswith('intermix_jax'))
  allowed = set(CORE) | {'intermix_jax.models.' + n for n in
                         ('cpu_ops', 'accel_ops', 'layers', 'envnet', 'envnetv2', 'm18', 'piczak',
                          'soundnet')}
  assert set(ours) <= allowed, sorted(set(ours) - allowed)   # no trainer, data or config module


@pytest.mark.parametrize('module', CORE + ('intermix_jax.models.layers', 'intermix_jax.models.cpu_ops',
                                           'intermix_jax.host_memory'))
def test_all_lists_existing_public_names(module):
  mod = importlib.import_module(module)
  assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
  for name in mod.__all__:
    assert hasattr(mod, name) and not name.startswith('_'), (module, name)


def test_package_reexports_the_public_api():
  for name in ('get_strategy', 'strategy_options', 'mix_point', 'MixPlan', 'Strategy', 'bc_mix',
               'interference_mix', 'mix_ratio', 'mix_labels', 'a_weighted_gain', 'phase_shift',
               'kl_divergence', 'cross_entropy', 'get_model', 'MODELS', 'STRATEGY_NAMES',
               'OPTION_NAMES'):
    assert name in intermix_jax.__all__, name
  assert intermix_jax.mix_point is mixing.mix_point
  assert intermix_jax.strategy_options('bc') == ('eligible_layers', 'p_weighting', 'pairing')


# --- mix_point --------------------------------------------------------------------------------
N, C, T, FS = 6, 5, 700, 16000


def _plan(name, layer, seed=0):
  rng = np.random.default_rng(seed)
  phi = rng.uniform(-np.pi / 2, np.pi / 2, N) if name == 'intermix' else np.zeros(N)
  return mixing.MixPlan(layer=jnp.int32(layer if name != 'standard' else -1),
                        r=jnp.asarray(rng.random(N) if name != 'standard' else np.ones(N), jnp.float32),
                        phi=jnp.asarray(phi, jnp.float32))


def _hidden(shape, seed=1):
  """Non-negative activations whose channels differ in level (so the channel-first flattening the
  A-weighted gain reads is not the channel-last one)."""
  rng = np.random.default_rng(seed)
  level = rng.uniform(0.01, 3.0, (shape[0], shape[1]) + (1,) * (len(shape) - 2))   # per channel
  h = np.abs(rng.standard_normal(shape)) * level
  return jnp.asarray(h, jnp.float32)


@pytest.mark.parametrize('name', mixing.STRATEGY_NAMES)
def test_mix_point_on_channel_last_equals_channel_first_transposed(name):
  options = {'eligible_layers': (1,)} if name != 'standard' else {}
  strategy = mixing.get_strategy(name, **options)
  plan = _plan(name, 1)
  mix = strategy.mixer(plan, FS)

  @jax.jit
  def run(plan, h_cf, h_cl, h4_cf, h4_cl):
    mix = strategy.mixer(plan, FS)
    return (mix(h_cf, 1), mixing.mix_point(h_cl, 1, mix, channel_axis=-1),
            mixing.mix_point(h_cl, 1, mix, channel_axis=2), mix(h_cl, 1),
            mix(h4_cf, 1), mixing.mix_point(h4_cl, 1, mix, channel_axis=-1))

  h_cf = _hidden((N, C, T))                          # (N, C, T)
  h4_cf = _hidden((N, C, 4, 90), seed=2)             # (N, C, H, W)
  h_cl, h4_cl = jnp.moveaxis(h_cf, 1, -1), jnp.moveaxis(h4_cf, 1, -1)   # NWC, NHWC
  cf, cl, cl2, naive, cf4, cl4 = jax.device_get(run(plan, h_cf, h_cl, h4_cf, h4_cl))
  np.testing.assert_array_equal(cl, np.moveaxis(cf, 1, -1))
  np.testing.assert_array_equal(cl2, cl)
  np.testing.assert_array_equal(cl4, np.moveaxis(cf4, 1, -1))
  if name != 'standard':
    assert not np.allclose(cf, h_cf)                 # it did mix
  if name in ('bc', 'speechmix', 'intermix'):        # p-weighting reads the layout: NWC given as is
    assert not np.allclose(naive, cl, rtol=1e-4), name   # would weigh the sounds differently
  # no mix function, or a point the plan does not choose: h unchanged
  assert mixing.mix_point(h_cl, 1, None, channel_axis=-1) is h_cl
  np.testing.assert_array_equal(mixing.mix_point(h_cl, 2, mix, channel_axis=-1), h_cl)


def test_mix_point_rejects_the_batch_axis_and_axes_out_of_range():
  h = jnp.ones((4, 3, 2))
  identity = lambda h, k: h
  for axis in (0, -3, 3, 1.0, None):
    with pytest.raises(ValueError, match='channel_axis'):
      mixing.mix_point(h, 1, identity, channel_axis=axis)
  assert mixing.mix_point(jnp.ones((4, 10)), 0, identity) is not None   # a waveform (N, T)


def _package_imports(module_level_only: bool) -> dict[str, set[str]]:
  """{module: project modules it imports} of every module of the intermix_jax package, from the
  source (`from intermix_jax import x` names the module x, not the package)."""
  import ast
  import os
  root = os.path.dirname(os.path.abspath(intermix_jax.__file__))
  modules = {}
  for d, _, files in os.walk(root):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(d, f)
        name = os.path.relpath(path[:-3], os.path.dirname(root)).replace(os.sep, '.')
        modules[name.removesuffix('.__init__')] = path
  graph = {m: set() for m in modules}
  for m, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in (tree.body if module_level_only else ast.walk(tree)):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        subs = [f'{node.module}.{a.name}' for a in node.names
                if f'{node.module}.{a.name}' in modules]
        names = subs or [node.module]
      graph[m].update(n for n in names if n in modules and n != m)
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


@pytest.mark.parametrize('module_level_only', [True, False])
def test_no_import_cycle_between_modules(module_level_only):
  """No two modules of the package import each other, directly or through others, even through
  imports inside functions (a package importing its own submodules is no cycle)."""
  graph = _package_imports(module_level_only)
  assert len(graph) > 40 and 'intermix_jax.train' in graph
  assert _cycles(graph) == []
  # the check can fail: a back edge makes a cycle
  graph['intermix_jax.protocol'].add('intermix_jax.config_lib')
  assert _cycles(graph) == [['intermix_jax.config_lib', 'intermix_jax.protocol']]
