"""Command line: train and evaluate one config into one workdir.

    python -m intermix_jax.main --config=configs/esc50.py:backbone=envnetv2,strategy=intermix,fold=1 \
        --workdir=runs/esc50/envnetv2/intermix/seed0/fold1 [--config.opt.lr=0.05] [--distributed]

Rerunning the same command resumes from the last checkpoint. The other flags (--list_config,
--verbose, ...): their help below, or --helpshort.

Exit status (WORKSPACE.md, "Reliability"): 0 finished, or stopped by SIGTERM (resumable); 130 after
Ctrl-C (resumable); 1 with one line `error: ...` naming the field, file or path. Any other exception
is a bug and keeps its traceback.
"""
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from intermix_jax import io_errors
from intermix_jax import termination

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with overrides: configs/esc50.py:key=value,key=value '
    '(quote a value that holds commas: manual_dir="/data/a,b")', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and results.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize(): True always, False never, unset: when '
    'the environment shows a multi-process launch (SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, ...).')
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    'reuse_host_memory', True, 'Keep freed host memory for reuse (glibc mallopt; see '
    'intermix_jax/host_memory.py): saves the page faults of every CPU step.')
_VERBOSE = flags.DEFINE_bool(
    'verbose', False, "Show the libraries' INFO logs (TFDS, JAX, orbax) and TFDS progress bars; "
    "by default only this trainer's lines and every library's warnings are shown.")
_LIST_CONFIG = flags.DEFINE_bool(
    'list_config', False, "Print every config field as 'key = value  # description' (the values "
    'of --config when given, else every config\'s defaults; docs/config.md) and exit.')
for _name, _what in (('config', 'a config file, e.g. --config=configs/demo.py'),
                     ('workdir', 'the directory of the run, e.g. --workdir=runs/demo')):
  flags.register_multi_flags_validator(
      [_name, 'list_config'], lambda v, n=_name: v['list_config'] or v[n] is not None,
      f'--{_name} is required ({_what}); only --list_config runs without it')

_SIGTERM_ACTS_AS_DEFAULT = False  # multi-process runs: JAX's preemption service owns SIGTERM


def _on_sigterm(signum, frame):
  """SIGTERM and SIGINT (Ctrl-C) outside the training loop: stop with nothing half-written."""
  if _SIGTERM_ACTS_AS_DEFAULT:  # several processes: SIGINT as Python's default, SIGTERM as the OS'
    if signum == signal.SIGINT:
      signal.default_int_handler(signum, frame)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  del frame
  termination.note(signum)  # kept even if Python swallows the exception below
  if signum == signal.SIGINT:
    termination.first_ctrl_c()  # a second Ctrl-C ends the process at once
  raise termination.Terminated()


def _quiet_about_terminated(unraisable, previous=sys.unraisablehook):
  """sys.unraisablehook that drops a Terminated Python could not raise (it is noted, and the
  trainer stops at its next safe point) and passes anything else to `previous` (Python's hook)."""
  if not isinstance(unraisable.exc_value, termination.Terminated):
    previous(unraisable)


def _flag_error_line(error: Exception) -> str:
  """One line for a flag parsing error; for a config file's get_config error, its own message."""
  text, marker, inner = str(error), ': Error whilst parsing config file', error
  while inner.__cause__ or (inner.__context__ and not inner.__suppress_context__):
    inner = inner.__cause__ or inner.__context__  # the chain as Python's traceback shows it
  if marker in text and inner is not error:  # ml_collections wraps get_config's error
    return f'{text.split(marker, 1)[0]}: {inner}'
  return ' '.join(text.split())


def _unknown_override_line(argv):
  """For ml_collections' AttributeError / KeyError on `--config.<field>=value` (a field the
  config lacks): the `configs/x.py:<field>=value` form's one line, naming the flag; else None."""
  from intermix_jax import config_lib
  args = [(arg, arg.split('=', 1)[0].lstrip('-')) for arg in argv[1:]]
  try:  # the file with its `:` overrides
    config = FLAGS['config'].parser.parse(
        next(arg.split('=', 1)[1] for arg, name in args if name == 'config' and '=' in arg))
  except Exception:  # pylint: disable=broad-except
    return None  # no --config=, or it does not load: the original error says more
  for arg, name in args:
    if name.startswith(('config.', 'noconfig.')):
      try:
        config_lib.parse_field(config, name.split('.', 1)[1], 'None')  # raises for unknown only
      except ValueError as e:
        if str(e).startswith('unknown config field'):
          return f'flag {arg}: {e}'
  return None


def _parse_flags(argv):
  """absl's flag parsing with every error as one line (exit 1, as absl's own parser)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(io_errors.error(_flag_error_line(e)))
  except (AttributeError, KeyError):  # ml_collections: `--config.foo=1`, foo not a field
    line = _unknown_override_line(argv)
    if line is None:
      raise
    sys.exit(io_errors.error(line))


def _quiet_libraries(record) -> bool:
  """absl-handler filter: drops other libraries' records below WARNING (TFDS 'Generating ...',
  JAX's 'Unable to initialize backend tpu', orbax) and TFDS's warning about its own new folders."""
  path = getattr(record, 'pathname', '') or ''
  if record.levelno < 30:  # the standard library's logging.WARNING
    return os.sep + 'intermix_jax' + os.sep in path
  try:
    return ('tensorflow_datasets' not in path or
            'has no dataset_info.json' not in record.getMessage())
  except Exception:  # pylint: disable=broad-except
    return True


def _loaded_config():
  """--config's ConfigDict; exit 1 after one line `error: --config: cannot load ...` when the file
  cannot be loaded (ml_collections defers a config file's load error to its first use)."""
  config = _CONFIG.value
  try:
    config.get('dataset')
  except OSError as e:
    last = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    name = config_flags.get_config_filename(FLAGS['config'])
    sys.exit(io_errors.error(f'--config: cannot load {name}: {last}'))
  return config


def main(argv):
  if len(argv) > 1:
    return io_errors.error(
        f'unexpected arguments {argv[1:]}: flags are --name=value (see --helpshort)')
  if _LIST_CONFIG.value:  # the fields of --config, else every config's defaults
    from intermix_jax import config_lib
    sys.stdout.write(config_lib.describe(None if _CONFIG.value is None else _loaded_config()))
    return 0
  verbose = _VERBOSE.value or logging.get_verbosity() >= logging.DEBUG
  if not verbose:
    logging.get_absl_handler().addFilter(_quiet_libraries)  # added once (logging.Filterer)
  if _REUSE_HOST_MEMORY.value:
    from intermix_jax import host_memory
    host_memory.reuse_freed_memory()  # before JAX starts its threads
  from intermix_jax import distributed
  distributed.initialize_distributed(_DISTRIBUTED.value)  # before any other JAX use

  import jax
  from intermix_jax import cli, data, train
  global _SIGTERM_ACTS_AS_DEFAULT
  _SIGTERM_ACTS_AS_DEFAULT = jax.process_count() > 1
  if jax.process_index() > 0:
    logging.set_verbosity(logging.WARNING)
  if not verbose:
    data.quiet_preparation()  # TFDS's progress bars and its printed 'Downloading ...' lines
  config = _loaded_config()

  def train_and_evaluate() -> int:
    train.train_and_evaluate(config, _WORKDIR.value)
    return 0
  return cli.one_line_errors(train_and_evaluate)


def run() -> None:
  """The process: SIGTERM and Ctrl-C handled from here on (imports, flags, data preparation), then
  main."""
  termination.own_process_signals()
  signal.signal(signal.SIGTERM, _on_sigterm)
  signal.signal(signal.SIGINT, _on_sigterm)
  sys.unraisablehook = _quiet_about_terminated
  try:
    app.run(main, flags_parser=_parse_flags)
  except termination.Terminated:
    print(f'stopped by {termination.describe(termination.stop_signal())} outside the training '
          'loop (while starting, preparing data, compiling or finishing): nothing to checkpoint, '
          'and nothing half-written will be used; rerun the same command to continue',
          file=sys.stderr, flush=True)
    status = 0
  except SystemExit as e:
    status = e.code
    if termination.stop_signal() != signal.SIGINT or status not in (0, None):
      raise
  if termination.stop_signal() == signal.SIGINT:  # end by SIGINT, as a shell expects of Ctrl-C
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    status = 130  # reached only while SIGINT is blocked
  sys.exit(status)


if __name__ == '__main__':
  run()
