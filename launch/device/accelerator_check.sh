#!/usr/bin/env bash
# One-command accelerator check, for a GPU machine lent for about 10 minutes (no network):
#
#     bash launch/device/fetch_wheels.sh                       # HERE first, with network: .wheels/
#     bash launch/device/accelerator_check.sh OUT_DIR          # there: every stage, ~9 min at most
#     bash launch/device/accelerator_check.sh --cpu OUT_DIR    # dry run of every stage, tiny sizes
#
# Stages, in this order, each under its own `timeout` (a failure or a hang costs at most its box;
# the limits below sum to 580 s at most):
#   deps      install the wheels of .wheels/ whose distributions the interpreter lacks
#             (`pip install --no-index --no-deps --target $SCRATCH/pydeps`, put on PYTHONPATH; the
#             machine's own jax, numpy, protobuf, ... are never replaced), then import-check them
#   tests     tests/test_mixing.py, test_steps.py, test_precision.py on the device (--cpu: one quick
#             test, the stage's wiring only; jax_default_matmul_precision=float32, so the
#             float32 tolerances of the tests mean what they say on TF32 hardware)
#   steps-*   the train step of each backbone x {intermix, standard} at batch 64 in bfloat16, TF32
#             (the default matmul precision) and float32: step time, examples/s, XLA FLOPs,
#             MFU against a matmul measured in the same process, compile time, memory; one
#             process per backbone (its own time box and device-memory peak)
#   pipeline  the input pipeline's examples/s with 1 thread and with all cores, per backbone,
#             against the step's consumption
#   demo      configs/demo.py trained to completion with a SIGTERM mid-run and a resume;
#             results.json
#   multirun  examples/s of K = 1, 2, 5, 10, 20 runs in one vmapped step (fold=all with
#             config.stack_runs) against one run alone, PiczakCNN and EnvNet-v2 at batch 64
#             (python -m benchmarks.multirun)
#   row       NOT in the default STAGES (a window of its own: STAGES="deps row"): the EnvNet-v2
#             ESC-10 row of table 1, 4 strategies x 5 folds, each strategy's folds in one program
#             with the clips on the device (launch/device/table_row.py; needs .esc10_ogg/, made
#             here by `python -m launch.device.table_row pack` and carried to the machine)
#   profile   NOT in the default STAGES (STAGES="deps profile"): where the step's time goes, one
#             process per backbone of PROFILE_BACKBONES (default "piczakcnn envnetv2"), each under
#             its own box. PiczakCNN (profile-piczakcnn): 20 vmapped runs against their memory floor
#             (issue 17's open question): one run alone and K = 20, float32 and bfloat16 at batch
#             64 traced, float32 at batch 256 timed. EnvNet-v2 (profile-envnetv2): one run alone
#             and the five folds unrolled in bfloat16 at batch 64 (the table-1 row's program),
#             traced. Traced with the JAX profiler: device time by kernel and by kernel class in
#             OUT_DIR/profile/<row>.kernels.txt, also in the report; XLA's FLOPs and bytes
#             accessed per row (accelerator_check.py profile)
#   envnet_ab NOT in the default STAGES (STAGES="deps envnet_ab"): EnvNet-v2's forward-pass
#             variants (intermix_jax/models/accel_ops.py, the same function of the same
#             parameters) A/B'd, python -m benchmarks.envnet_ab: the InterMix step at batch 64 per
#             variant, bfloat16 and float32 one run (envnet_ab), then bfloat16 five folds unrolled
#             (envnet_ab-k5); ms/step, TFLOP/s, transposes and copies of the compiled HLO; rows in
#             OUT_DIR/envnet_ab.jsonl and the report
#   report    one report, printed and written to OUT_DIR/accelerator_check.md
# Everything measured lands in OUT_DIR as it is measured (JSON lines, logs/<stage>.log); the
# synthetic data, the pip target and the demo workdir live in $SCRATCH (default
# /tmp/intermix_accelerator_check), not in OUT_DIR. Environment: PYTHON (interpreter; default
# .venv/bin/python if present, else python3), SCRATCH, STAGES (default "deps tests steps pipeline
# demo multirun"; e.g. STAGES="deps steps" BACKBONES="m18 soundnet5" for a second window), BACKBONES,
# T_MULTI, T_ROW, T_PROFILE, T_PROFILE_ENVNETV2, T_AB and T_AB5 (the multirun, row, two profile
# and two envnet_ab boxes, s), AB_VARIANTS (e.g. plain,blocked), ROW_STRATEGIES (e.g.
# standard,intermix), PROFILE_BACKBONES. On an accelerator the files of
# OUT_DIR are packed at the end into accelerator_check.tgz (all but the raw traces) and
# profile_traces.tgz (the traces and HLO, left out when over 15 MiB), beside
# accelerator_check.md: a device call returns at most 8 files, none more than 2 folders down.
set -uo pipefail
cmdline="bash launch/device/accelerator_check.sh $*"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mode=accelerator
if [[ "${1:-}" == "--cpu" ]]; then mode=cpu; shift; fi
out="${1:-${OUT:-$root/runs/accelerator_check}}"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
scratch="${SCRATCH:-/tmp/intermix_accelerator_check}"
mkdir -p "$scratch"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"
else py=python3; fi
rm -f "$out"/stages.tsv "$out"/steps.jsonl "$out"/pipeline.jsonl "$out"/demo.jsonl "$out"/multirun.jsonl \
  "$out"/row.jsonl "$out"/profile.jsonl "$out"/envnet_ab.jsonl

if [[ $mode == cpu ]]; then
  export JAX_PLATFORMS=cpu
  backbones=(piczakcnn)
  strategies=(intermix)
  step_args=(--batch 4 --width 0.25 --fc_units 32 --repeats 2 --matmul_n 512)
  pipe_args=(--backbones piczakcnn --epochs 1)
  demo_args=(--cpu --sigterm_at_step 2)
  tests=(tests/test_precision.py -k validated)  # the stage's wiring only: one quick test
  multi_args=(--backbones piczakcnn --strategies intermix --ks 1,2 --batch 4 --fc_units 32
              --methods vmap --repeats 2)
  row_args=(--cpu --strategies standard)
  prof_args=(--variants float32:4,bfloat16:4 --ks 2 --width 0.25 --fc_units 32 --repeats 2
             --traced 1)
  prof_env_args=(--backbone envnetv2 --method unroll --variants bfloat16:4 --ks 2 --width 0.3
                 --fc_units 16 --repeats 1 --traced 1)
  t_tests=120; t_step=150; t_pipe=150; t_demo=300; t_multi=200; t_row=300; t_prof=300
  t_prof_env=400
  # The accelerator's program (cpu_ops 'plain') of two variants at tiny size, one timed step.
  ab_args=(--cpu --tiny --variants plain,blocked); ab5_args=()
  t_ab=300; t_ab5=0
else
  backbones=(envnetv2 envnet m18 soundnet5 piczakcnn)
  strategies=(intermix standard)
  step_args=(--batch 64 --repeats 10 --matmul_n 8192)
  pipe_args=(--backbones envnet,envnetv2,piczakcnn,soundnet5,m18 --epochs 4)
  demo_args=(--sigterm_at_step 30)
  tests=(tests/test_mixing.py tests/test_steps.py tests/test_precision.py)
  multi_args=(--backbones piczakcnn,envnetv2 --strategies intermix --ks 1,2,5,10,20 --batch 64
              --width 1 --fc_units 0 --repeats 20 --methods vmap)
  row_args=()
  prof_args=()
  # EnvNet-v2: one run alone and the 5 folds unrolled, bfloat16, batch 64 per run, both traced
  # (compiled in 24 s and about 34 s on the H200); 10 timed steps each.
  prof_env_args=(--backbone envnetv2 --method unroll --variants bfloat16:64 --ks 5 --repeats 10
                 --traced 1)
  t_tests=60; t_step=40; t_pipe=60; t_demo=90; t_multi=110; t_row=500; t_prof=240
  t_prof_env=200
  # EnvNet-v2 variants at batch 64, 10 timed steps: one run in bfloat16 and float32 (8 compiles,
  # ~25 s each on the H200), then the five folds unrolled in bfloat16 (4 compiles, ~35 s each).
  ab_args=(--precisions bfloat16,float32 --runs 1 --repeats 10)
  ab5_args=(--precisions bfloat16 --runs 5 --repeats 10)
  t_ab=300; t_ab5=240
fi
if [[ -n "${BACKBONES:-}" ]]; then read -r -a backbones <<< "${BACKBONES//,/ }"; fi
t_multi=${T_MULTI:-$t_multi}; t_row=${T_ROW:-$t_row}  # boxes of a shorter or longer window
t_prof=${T_PROFILE:-$t_prof}; t_prof_env=${T_PROFILE_ENVNETV2:-$t_prof_env}
t_ab=${T_AB:-$t_ab}; t_ab5=${T_AB5:-$t_ab5}
if [[ -n "${AB_VARIANTS:-}" ]]; then ab_args+=(--variants "$AB_VARIANTS"); ab5_args+=(--variants "$AB_VARIANTS"); fi
pb="${PROFILE_BACKBONES:-piczakcnn envnetv2}"
read -r -a prof_backbones <<< "${pb//,/ }"
if [[ -n "${ROW_STRATEGIES:-}" ]]; then row_args+=(--strategies "$ROW_STRATEGIES"); fi
stages=" ${STAGES:-deps tests steps pipeline demo multirun} "
want() { [[ "$stages" == *" $1 "* ]]; }
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # sequential processes; true peaks in memory_stats

stage() {  # stage NAME LIMIT_S CMD...: runs CMD under `timeout`, logs it, records the exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit} s): $*"
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/logs/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >> "$out/stages.tsv"
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
}

step_args+=(--strategies "$(IFS=,; echo "${strategies[*]}")")
step_configs=$(for b in "${backbones[@]}"; do for s in "${strategies[@]}"; do
  for p in bfloat16 tf32 float32; do printf '["%s","%s","%s"],' "$b" "$s" "$p"; done; done; done)
"$py" - "$out/meta.json" "$mode" "[${step_configs%,}]" "$cmdline" <<'EOF'
import datetime, json, os, platform, subprocess, sys
path, mode, configs, command = sys.argv[1:5]
try:
  gpu = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                        '--format=csv,noheader'], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
  gpu = ''
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
json.dump(dict(mode=mode, step_configs=json.loads(configs), command=command,
               date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
               machine=f'{gpu or "no GPU"}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}'),
          open(path, 'w'))
EOF

want deps && stage deps 60 "$py" -m launch.device.accelerator_check deps --out "$out" \
  --wheels "$root/.wheels" --target "$scratch/pydeps"
if [[ -d "$scratch/pydeps" ]]; then
  export PYTHONPATH="$scratch/pydeps:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi

want tests && stage tests "$t_tests" env JAX_DEFAULT_MATMUL_PRECISION=float32 \
  "$py" -m pytest -q -p no:cacheprovider --junitxml="$out/tests.xml" "${tests[@]}"

if want steps; then
  for b in "${backbones[@]}"; do
    stage "steps-$b" "$t_step" "$py" -m launch.device.accelerator_check steps --out "$out" \
      --backbone "$b" "${step_args[@]}"
  done
fi

want pipeline && stage pipeline "$t_pipe" "$py" -m launch.device.accelerator_check pipeline \
  --out "$out" --data_dir "$scratch/tfds" "${pipe_args[@]}"

want demo && stage demo "$t_demo" "$py" -m launch.device.accelerator_check demo --out "$out" \
  --data_dir "$scratch/tfds" --workdir "$scratch/workdirs" "${demo_args[@]}"

want multirun && stage multirun "$t_multi" "$py" -m benchmarks.multirun \
  --out "$out/multirun.jsonl" "${multi_args[@]}"

want row && stage row "$t_row" "$py" -m launch.device.table_row run --out "$out" \
  --scratch "$scratch" --budget_s $((t_row - 30)) "${row_args[@]}"

if want envnet_ab; then
  stage envnet_ab "$t_ab" "$py" -m benchmarks.envnet_ab --out "$out/envnet_ab.jsonl" "${ab_args[@]}"
  if (( t_ab5 > 0 )); then
    stage envnet_ab-k5 "$t_ab5" "$py" -m benchmarks.envnet_ab --out "$out/envnet_ab.jsonl" \
      "${ab5_args[@]}"
  fi
fi

if want profile; then
  for b in "${prof_backbones[@]}"; do
    case $b in
      piczakcnn) stage profile-piczakcnn "$t_prof" "$py" -m launch.device.accelerator_check \
                   profile --out "$out" "${prof_args[@]}" ;;
      envnetv2) stage profile-envnetv2 "$t_prof_env" "$py" -m launch.device.accelerator_check \
                  profile --out "$out" "${prof_env_args[@]}" ;;
      *) echo "accelerator_check: no profile stage for $b (piczakcnn, envnetv2)" ;;
    esac
  done
fi

"$py" -m launch.device.accelerator_check report --out "$out"
failed=$(awk -F'\t' '$2 != 0' "$out/stages.tsv" | wc -l)
if [[ $mode == accelerator ]]; then  # at most 8 files come back, no more than 2 folders down
  (cd "$out" && tar czf accelerator_check.tgz --exclude=accelerator_check.md \
     --exclude=accelerator_check.tgz --exclude=profile_traces.tgz --exclude='profile/*/*' . \
   && if compgen -G 'profile/*/' > /dev/null; then
        tar czf profile_traces.tgz profile/*/ \
        && if (( $(stat -c %s profile_traces.tgz) > 15 * 1024 * 1024 )); then
             echo "accelerator_check: profile_traces.tgz over 15 MiB: left out"
             rm -f profile_traces.tgz
           fi
      fi \
   && find . -mindepth 1 -maxdepth 1 ! -name accelerator_check.md ! -name accelerator_check.tgz \
        ! -name profile_traces.tgz -exec rm -rf {} +) \
  || echo "accelerator_check: packing $out failed; its files are left as they are"
fi
echo "accelerator_check: $failed stage(s) not ok; report: $out/accelerator_check.md"
exit $(( failed > 0 ))
