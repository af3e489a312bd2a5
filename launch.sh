#!/usr/bin/env bash
# Set up (once) and start the web UI:    ./launch.sh [app.py flags]
# Set up (once) and run the test suite:  ./launch.sh --test [pytest args]
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "launch.sh: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# Install a requirements file only when it changed since the last install into this venv.
install_requirements() {
  local file=$1 stamp="$VENV/.installed-$(basename "$1")"
  local sum
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then return 0; fi
  echo "launch.sh: installing $file ..." >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$file" 2>&1 |
    { grep -v -E "Location '.*' is ignored" || true; } >&2
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "launch.sh: pip install -r $file failed" >&2; exit 1; }
  echo "$sum" > "$stamp"
}

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python)
  echo "launch.sh: creating $VENV with $PY" >&2
  "$PY" -m venv "$VENV"
fi
install_requirements requirements.txt

# Browser tests drive Debian's chromium (Playwright's own browser download cannot work offline).
install_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "launch.sh: installing Debian's chromium for the browser tests ..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
      { echo "launch.sh: could not install chromium" >&2; exit 1; }
  else
    echo "launch.sh: chromium is missing (apt-get install chromium); browser tests will be skipped" >&2
  fi
}

if [ "${1:-}" = "--test" ]; then
  shift
  install_requirements requirements-test.txt
  install_chromium
  export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error GRADIO_ANALYTICS_ENABLED=False
  set +e
  "$VENV/bin/python" -m pytest -q tests "$@"
  status=$?
  [ $status -eq 5 ] && { echo "launch.sh: no tests were collected" >&2; exit 1; }
  exit $status
fi

exec "$VENV/bin/python" app.py "$@"
