#!/usr/bin/env bash
# A plain `pip install .` (no extras, as the Dockerfile does) must be enough to run a worker, a
# distributed run and a cancel: `make test` installs `[dev]`, which once hid a missing dependency.
# Everything runs from a temp dir, so the installed package is used, not this source tree.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TMP="$(mktemp -d -t chordflow-plain-XXXXXX)"
REDIS_PID="" WORKER_PID=""
started=$SECONDS

cleanup() {
  local rc=$?
  for pid in $WORKER_PID $REDIS_PID; do  # each was started with setsid: its pid is its process group
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in $WORKER_PID $REDIS_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -f "$TMP/worker.log" ]; then
    echo "--- worker log (last 40 lines)" >&2; tail -n 40 "$TMP/worker.log" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "plain-install: $*"; }

say "fresh venv in $TMP, pip install . (no extras)"
"$PYTHON" -m venv "$TMP/venv"
mkdir "$TMP/src"  # install from a copy of the tracked files: building in place would leave build/ behind
git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$TMP/src"
"$TMP/venv/bin/pip" install --quiet --disable-pip-version-check "$TMP/src" 2>&1 | grep -v "^WARNING: Location" || true
"$TMP/venv/bin/python" -c "import orchestrator, workers.app" >/dev/null  # fails loudly if the install failed
BIN="$TMP/venv/bin"
cd "$TMP"
say "the dashboard's files are inside the installed package"
"$BIN/python" -c '
from orchestrator.api.dashboard import static_file
assert all(len(static_file(n)) > 100 for n in ("index.html", "app.js", "style.css"))'

say "private Redis (the project's own RedisServer) with a password on a free loopback port"
setsid "$BIN/python" -c '
import pathlib, signal, sys
from orchestrator.embedded import RedisServer
server = RedisServer(pathlib.Path(sys.argv[1])).start()
pathlib.Path(sys.argv[2]).write_text(server.url)
signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
while True:
    signal.pause()
' "$TMP/redis" "$TMP/redis.url" &
REDIS_PID=$!
for _ in $(seq 100); do [ -s "$TMP/redis.url" ] && break; kill -0 "$REDIS_PID" || exit 1; sleep 0.1; done
[ -s "$TMP/redis.url" ] || { echo "plain-install: Redis did not start" >&2; exit 1; }
export CHORDFLOW_REDIS_URL="$(cat "$TMP/redis.url")"
export CHORDFLOW_ARTIFACT_ROOT="$TMP/artifacts"
unset CHORDFLOW_TASK_MODULES CHORDFLOW_ALLOWED_TASK_PREFIXES CHORDFLOW_ENV

say "chordflow worker"
setsid "$BIN/chordflow" worker -c 2 -n plain@%h >"$TMP/worker.log" 2>&1 &
WORKER_PID=$!

PIPELINE="$REPO/tasks/etl/pipeline.toml"
say "chordflow run (distributed, must succeed)"
"$BIN/chordflow" run "$PIPELINE" --no-progress --timeout 60 \
  --param ingest.rows=2000 --param daily_revenue.slow_s=0
kill -0 "$WORKER_PID"  # the worker is still up

say "chordflow cancel on a detached run"
RUN_ID="$("$BIN/chordflow" run "$PIPELINE" --detach --param ingest.rows=2000 --param daily_revenue.slow_s=60)"
task_state() {  # state of run $1 (or of its task $2)
  "$BIN/chordflow" status "$1" --json | "$BIN/python" -c '
import json, sys
snap = json.load(sys.stdin)
print(snap["tasks"][sys.argv[1]]["state"] if len(sys.argv) > 1 else snap["state"])' "${@:2}"
}
for _ in $(seq 60); do [ "$(task_state "$RUN_ID" daily_revenue)" = running ] && break; sleep 0.5; done
[ "$(task_state "$RUN_ID" daily_revenue)" = running ] || { echo "plain-install: daily_revenue never ran" >&2; exit 1; }
"$BIN/chordflow" cancel "$RUN_ID"
for _ in $(seq 40); do [ "$(task_state "$RUN_ID")" = cancelled ] && break; sleep 0.5; done
state="$(task_state "$RUN_ID")"
[ "$state" = cancelled ] || { echo "plain-install: run $RUN_ID is $state after cancel, expected cancelled" >&2; exit 1; }
kill -0 "$WORKER_PID"

say "ok in $((SECONDS - started)) s"
