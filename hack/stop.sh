#!/usr/bin/env bash
# `make stop`: stop what `make run` started and remove what it set up on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=/var/lib/skiff/run
[[ $EUID -eq 0 ]] || { echo "make stop: run as root" >&2; exit 1; }
if [[ -f $RUN/skiff.pid ]] && kill -0 "$(cat "$RUN/skiff.pid")" 2>/dev/null; then
	pid=$(cat "$RUN/skiff.pid")
	echo "stopping skiff (pid $pid)"
	kill "$pid"
	for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
fi
rm -f "$RUN/skiff.pid"
_output/skiff uninstall --keep-data 2>/dev/null || echo "note: skiff uninstall is not available in this build; host state may remain"
