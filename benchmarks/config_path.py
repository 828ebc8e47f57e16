"""Which modules a config passes through from `main` to the train step (and back).

    python benchmarks/config_path.py [--config=configs/demo.py:...]

Runs `python -m intermix_jax.main` in this process on a one-step demo run (synthetic data, one
epoch, one step) under `sys.setprofile`, and lists every module of this project whose functions
receive the config (the ConfigDict or one of its sub-dicts: model, mixing, opt) as an argument, in
the order the config first reaches them, with the number of such calls. ml_collections, absl and the
standard library are not counted.
"""
import collections
import os
import sys
import tempfile

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  config = next((a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--config=')),
                'configs/demo.py')
  workdir = tempfile.mkdtemp(prefix='config_path_')
  data_dir = tempfile.mkdtemp(prefix='config_path_data_')
  overrides = ('num_epochs=1,steps_per_epoch=1,eval_every_epochs=1,double_epochs_for_mixing=False,'
               f'data_dir={data_dir}')
  sys.argv = ['intermix_jax.main', f'--config={config}' + (',' if ':' in config else ':') +
              overrides, f'--workdir={workdir}']
  seen = collections.OrderedDict()

  def profile(frame, event, arg):
    if event != 'call':
      return
    code = frame.f_code
    path = code.co_filename
    if (not path.startswith(REPO) or 'site-packages' in path
        or os.sep + 'benchmarks' + os.sep in path):
      return
    for name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
      if isinstance(frame.f_locals.get(name), ml_collections.ConfigDict):
        module = os.path.relpath(path, REPO)
        seen[module] = seen.get(module, 0) + 1
        return

  sys.path.insert(0, REPO)
  os.chdir(REPO)
  from intermix_jax import main as main_lib
  sys.setprofile(profile)
  try:
    main_lib.run()
  except SystemExit:
    pass
  finally:
    sys.setprofile(None)
  print(f'| # | module receiving the config | calls |')
  print('|---|---|---|')
  for i, (module, n) in enumerate(seen.items(), 1):
    print(f'| {i} | {module} | {n} |')
  print(f'{len(seen)} modules')


if __name__ == '__main__':
  main()
