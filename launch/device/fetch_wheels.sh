#!/usr/bin/env bash
# Downloads, HERE (with network), the wheels the accelerator machine lacks, for CPython 3.12 on
# manylinux x86_64, into a git-ignored folder that travels with the working tree:
#
#     bash launch/device/fetch_wheels.sh         # -> .wheels/ (prints the size)
#     bash launch/device/fetch_wheels.sh DIR     # -> DIR
#
# The accelerator machine (launch/device/accelerator_check.sh) has Python 3.12, jax/jaxlib with the CUDA
# plugin, flax, optax, orbax-checkpoint, chex, absl-py, etils, numpy, scipy, matplotlib,
# tensorboard, pytest and hypothesis (and what they depend on: protobuf, six, typing_extensions,
# PyYAML, attrs, msgpack, ...), but no network. What the project imports beyond that is
# tensorflow-datasets, grain, array_record, ml_collections, soundfile and soxr; clu is in setup.cfg.
# They and their runtime dependencies that are not in the list above are named here one by one
# (`--no-deps`: nothing else is pulled in, and never jax, numpy or protobuf, so the machine's own
# versions stay in charge). Versions are those of the project's tested .venv.
#
# Left out on purpose: pyarrow (a 55 MB wheel; tensorflow-datasets lists it but imports it only for
# formats this project does not use; the check's import test and training run prove it is not
# needed), librosa (test-only extra: tests that use it are not in the accelerator's test tier).
#
# accelerator_check.sh installs, with `pip install --no-index --no-deps --target <tmp>`, only the
# wheels whose modules the machine cannot already import, and puts <tmp> on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${1:-$root/.wheels}"
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"
else py=python3; fi

# Binary wheels (pure-python ones are py3-none-any), pinned to the project's tested versions.
BINARY=(
  tensorflow-datasets==4.9.10 array_record==0.8.6 grain==0.2.18 ml_collections==1.1.0
  soundfile==0.14.0 soxr==1.1.0 clu==0.0.12
  # tensorflow-datasets' runtime dependencies
  dm-tree==0.1.10 immutabledict==4.3.1 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  simple-parsing==0.1.9 docstring-parser==0.18.0 termcolor==3.3.0 toml==0.10.2 tqdm==4.70.1
  wrapt==2.5.2 psutil==7.2.2 requests==2.34.2 urllib3==2.8.0 idna==3.20
  certifi==2026.10.19.post1 charset-normalizer==3.5.3 six==1.17.0
  # etils extras used by tensorflow-datasets (etils[enp,epath]); tiny, installed only if missing
  einops==0.8.2 fsspec==2026.9.0 zipp==4.1.2
  # grain; soundfile (its wheel carries libsndfile; it calls it through cffi)
  cloudpickle==3.1.3 portpicker==1.6.0 cffi==2.1.1 pycparser==3.12
)
# Published as source only (pure python): built into a py3-none-any wheel here.
SOURCE_ONLY=(promise==2.3)

mkdir -p "$dest"
echo "fetch_wheels: $py -m pip ($("$py" -m pip --version | cut -d' ' -f1-2)) -> $dest"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$dest" "${BINARY[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$dest" \
  "${SOURCE_ONLY[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)

count=$(ls "$dest"/*.whl | wc -l)
bytes=$(cat "$dest"/*.whl | wc -c)
echo "fetch_wheels: $count wheels, $(( (bytes + 524287) / 1048576 )) MiB ($bytes bytes) in $dest"
if (( bytes > 32 * 1048576 )); then
  echo "fetch_wheels: WARNING: over 32 MiB; the working tree that travels must stay under 64 MB" >&2
fi
