#!/usr/bin/env bash
# `make stop`: stop what `make run` started and remove what it set up on the
# host, keeping the cluster's data. `make wipe` (hack/stop.sh --wipe) removes
# the data too.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=/var/lib/skiff/run
wipe=false
[[ ${1:-} == --wipe ]] && wipe=true
[[ $EUID -eq 0 ]] || { echo "make stop: run as root" >&2; exit 1; }
if [[ -f $RUN/skiff.pid ]] && kill -0 "$(cat "$RUN/skiff.pid")" 2>/dev/null; then
	pid=$(cat "$RUN/skiff.pid")
	echo "stopping skiff (pid $pid)"
	kill "$pid"
	for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
	kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
fi
rm -f "$RUN/skiff.pid"
# The containers, mounts, routes and BPF programs outlive the server process
# on purpose (an agent restart must not stop pods): remove them.
if $wipe; then
	_output/skiff uninstall
	echo "stopped and wiped: the cluster's data (/var/lib/skiff) is gone; make run starts a new cluster"
else
	# The data dir stays, so the next `make run` brings back the same cluster
	# and its workloads.
	_output/skiff uninstall --keep-data
	echo "stopped; the cluster's data is kept in /var/lib/skiff for the next make run (make wipe removes it)"
fi
