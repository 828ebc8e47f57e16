#!/usr/bin/env python3
"""Runs a long study (a sweep of training runs) resumably, from pinned code, committing each result.

A study is many runs of `python -m intermix_jax.main` that take hours to days on a CPU. This driver:

- runs the code of ONE commit (`--code`: a `git worktree` outside the project checkout, so work
  landing meanwhile does not change the code under the study) with one interpreter (`--python`);
- runs `--jobs` runs side by side, each pinned to its own CPU (`taskset`) when `--pin` is given
  (on 2 cores two single-threaded runs finish a table sooner than one two-threaded run at a time:
  results/esc10_protocol/README.md has the measurement);
- skips a run whose results.json (in the results tree or in its workdir) says `finished`, resumes an
  interrupted run from its last checkpoint when its workdir is still there (the trainer does that
  when the same command is rerun), and starts it afresh otherwise;
- copies each finished run's results.json (per-clip predictions and curves; no checkpoints, no audio)
  into `--results/<backbone>/<strategy>/seed<S>/fold<F>/results.json` and, with `--commit`, commits
  that one file in the repository holding `--results` at once (only that path: other staged or
  unstaged work in the checkout is left alone), so a stop loses at most the runs in flight;
- on SIGTERM / SIGINT passes SIGTERM to the runs (each saves a checkpoint and exits) and stops.

Example (the ESC-10 x PiczakCNN protocol study):

    git worktree add --detach /work/study/code <commit>
    python launch/study.py --code=/work/study/code --python=/work/study/venv/bin/python \\
        --dataset=esc10 --backbone=piczakcnn --strategies=standard,intermix,bc,speechmix \\
        --folds=1-5 --seeds=0 --root=/work/study/runs --results=results/esc10_protocol \\
        --extra=manual_dir=/work/shared/data/esc10,data_dir=/work/study/tfds --jobs=2 --pin --commit

Run order: seeds outer, then folds, then strategies in the order given (so the paired comparison
of the first strategies fills fold by fold).
"""
import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402  (launch/sweep.py: one place for the command of a run)

RESULTS_FILE = 'results.json'


def status_of(path):
  """The `status` of a results.json, or None if absent/unreadable."""
  try:
    with open(path) as f:
      return json.load(f).get('status')
  except (OSError, ValueError):
    return None


class Study:

  def __init__(self, args):
    self.args = args
    self.lock = threading.Lock()
    self.stopping = False
    self.procs = {}
    self.log_path = os.path.join(args.root, 'study.log')
    os.makedirs(args.root, exist_ok=True)

  def log(self, msg):
    line = f'[study {time.strftime("%Y-%m-%d %H:%M:%S")}] {msg}'
    with self.lock:
      print(line, flush=True)
      with open(self.log_path, 'a') as f:
        f.write(line + '\n')

  def jobs(self):
    a = self.args
    for seed, fold, strategy in itertools.product(
        sweep.parse_range(a.seeds), sweep.parse_range(a.folds), sweep.parse_list(a.strategies)):
      cmd, workdir = sweep.run_spec(a.dataset, a.backbone, strategy, fold, seed, a.root, a.extra,
                                    variant=a.variant or None)
      folder = f'{strategy}-{a.variant}' if a.variant else strategy  # as the workdir's
      rel = os.path.join(a.backbone, folder, f'seed{seed}', f'fold{fold}')
      yield cmd, workdir, os.path.join(a.results, rel, RESULTS_FILE)

  def collect(self, workdir, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + '.tmp'
    shutil.copyfile(os.path.join(workdir, RESULTS_FILE), tmp)
    os.replace(tmp, dest)
    if not self.args.commit:
      return
    repo = os.path.dirname(os.path.abspath(dest))
    for attempt in range(30):  # another git command in the checkout may hold index.lock
      add = subprocess.run(['git', '-C', repo, 'add', '--', os.path.abspath(dest)],
                           capture_output=True, text=True)
      commit = add.returncode == 0 and subprocess.run(
          ['git', '-C', repo, 'commit', '-q', '-m',
           f'{os.path.relpath(dest, self.args.results_repo_root)}: finished run',
           '--only', '--', os.path.abspath(dest)], capture_output=True, text=True)
      if commit and commit.returncode == 0:
        self.log(f'committed {dest}')
        return
      err = (add.stderr if add.returncode else commit.stderr).strip().splitlines()
      if 'nothing to commit' in ' '.join(err) or (commit and 'nothing' in commit.stdout):
        return
      time.sleep(2 + attempt)
    self.log(f'could not commit {dest}: {err[-1] if err else "?"} (the file is in place)')

  def worker(self, slot, queue):
    while not self.stopping:
      with self.lock:
        if not queue:
          return
        cmd, workdir, dest = queue.pop(0)
      if status_of(dest) == 'finished':
        continue
      if status_of(os.path.join(workdir, RESULTS_FILE)) == 'finished':
        self.collect(workdir, dest)
        continue
      argv = [self.args.python] + cmd[1:]
      if self.args.pin:
        argv = ['taskset', '-c', str((self.args.first_cpu + slot) % os.cpu_count())] + argv
      if self.args.nice:
        argv = ['nice', '-n', str(self.args.nice)] + argv
      resumed = os.path.isdir(os.path.join(workdir, 'checkpoints'))
      self.log(f'slot {slot} {"resume" if resumed else "start"}: {workdir}')
      os.makedirs(workdir, exist_ok=True)
      start = time.time()
      with open(os.path.join(workdir, 'console.log'), 'a') as out:
        proc = subprocess.Popen(argv, cwd=self.args.code, stdout=out, stderr=subprocess.STDOUT)
        self.procs[slot] = proc
        rc = proc.wait()
        self.procs.pop(slot, None)
      status = status_of(os.path.join(workdir, RESULTS_FILE))
      self.log(f'slot {slot} exit {rc} status {status} after {time.time() - start:.0f} s: {workdir}')
      if status == 'finished':
        self.collect(workdir, dest)

  def run(self):
    queue = list(self.jobs())
    self.log(f'{len(queue)} runs; code {self.args.code} at {self.args.commit_id}; jobs {self.args.jobs}')

    def stop(signum, frame):
      self.stopping = True
      self.log(f'signal {signum}: stopping the runs (each checkpoints and exits)')
      for proc in list(self.procs.values()):
        proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=self.worker, args=(slot, queue), daemon=True)
               for slot in range(self.args.jobs)]
    for t in threads:
      t.start()
    while any(t.is_alive() for t in threads):
      time.sleep(1)
    self.log('stopped' if self.stopping else 'all runs done')
    return 0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument('--code', required=True, help='checkout (worktree) of the pinned commit')
  p.add_argument('--python', default=sys.executable, help='interpreter with the dependencies')
  p.add_argument('--dataset', default='esc10')
  p.add_argument('--backbone', default='piczakcnn')
  p.add_argument('--strategies', default='standard,intermix,bc,speechmix')
  p.add_argument('--folds', default='1-5')
  p.add_argument('--seeds', default='0')
  p.add_argument('--root', required=True, help='where the workdirs go (outside the checkout)')
  p.add_argument('--results', required=True, help='results tree inside the repository')
  p.add_argument('--extra', default='', help='extra overrides for every run')
  p.add_argument('--variant', default='',
                 help='name of the variant the --extra overrides make: runs go to '
                      '<strategy>-<variant>/ (workdirs and results), never beside the default\'s')
  p.add_argument('--jobs', type=int, default=1)
  p.add_argument('--pin', action='store_true', help='pin run k to CPU k (taskset)')
  p.add_argument('--first_cpu', type=int, default=0,
                 help='with --pin: run k goes to CPU first_cpu + k (two drivers side by side)')
  p.add_argument('--nice', type=int, default=0)
  p.add_argument('--commit', action='store_true', help='git-commit each finished results.json')
  args = p.parse_args(argv)
  args.root = os.path.abspath(args.root)
  args.results = os.path.abspath(args.results)
  args.code = os.path.abspath(args.code)
  args.commit_id = subprocess.run(['git', '-C', args.code, 'rev-parse', 'HEAD'],
                                  capture_output=True, text=True).stdout.strip() or 'unknown'
  os.makedirs(args.results, exist_ok=True)
  args.results_repo_root = subprocess.run(
      ['git', '-C', args.results, 'rev-parse', '--show-toplevel'],
      capture_output=True, text=True).stdout.strip() or args.results
  return Study(args).run()


if __name__ == '__main__':
  sys.exit(main())
