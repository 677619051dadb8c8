#!/usr/bin/env bash
# The local stack (Ray head, MLflow server, S3 endpoint) with the project's virtual environment:
#   infra/local_stack.sh start|status|env|stop [--dir DIR]
#   eval "$(infra/local_stack.sh start)"    # start it and point this shell at it
# See infra/local_stack.py for what each command does.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${TVIFM_PYTHON:-$(dirname "$here")/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "error: $python not found; run 'make setup' first (or set TVIFM_PYTHON)" >&2
    exit 2
fi
exec "$python" "$here/local_stack.py" "$@"
