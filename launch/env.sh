# Sourced by launch/*.sh: creates (or refreshes) the project's virtual environment in .venv.
# The environment is rebuilt when setup.cfg changes (a stamp holds its hash). It is created with
# $INTERMIX_PYTHON (default python3), which must be Python >= 3.11 (jax >= 0.7 needs it): an older
# one stops here with one line and exit status 1, before anything is created.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INTERMIX_VENV:-$_root/.venv}"
_stamp="$VENV/.intermix_setup_hash"
_hash="$(sha256sum "$_root/setup.cfg" "$_root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_hash" ]; then
  _python="${INTERMIX_PYTHON:-python3}"
  _version="$("$_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
  case "$_version" in
    3.1[1-9] | 3.[2-9][0-9] | [4-9].*) ;;
    *)
      echo "[env] intermix_jax needs Python >= 3.11 (jax >= 0.7), but $_python is ${_version:-not found}: install Python 3.11+ and rerun, or set INTERMIX_PYTHON=/path/to/python3.11" >&2
      exit 1 ;;
  esac
  echo "[env] installing intermix_jax and its dependencies into $VENV" >&2
  "$_python" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$_root[test]"
  echo "$_hash" > "$_stamp"
fi
PY="$VENV/bin/python"
