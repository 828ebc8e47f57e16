# Sourced by launch/*.sh: creates (or refreshes) the project's virtual environment in .venv.
# The environment is rebuilt when setup.cfg changes (a stamp holds its hash).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INTERMIX_VENV:-$_root/.venv}"
_stamp="$VENV/.intermix_setup_hash"
_hash="$(sha256sum "$_root/setup.cfg" "$_root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$_stamp" 2>/dev/null)" != "$_hash" ]; then
  echo "[env] installing intermix_jax and its dependencies into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$_root[test]"
  echo "$_hash" > "$_stamp"
fi
PY="$VENV/bin/python"
