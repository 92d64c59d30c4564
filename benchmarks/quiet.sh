#!/usr/bin/env bash
# Run a timing command with this machine's background training jobs paused (SIGSTOP), so latency is not measured
# on a CPU shared with them; they resume (SIGCONT) when the command ends, however it ends. Jobs are found by their
# command line: QUIET_PATTERN (an extended regex for `pgrep -f`) names them; the default covers this repository's
# long sweeps. Other users' jobs are not paused: timings stay noisy on a machine you do not own.
#
#   bash benchmarks/quiet.sh .venv/bin/python benchmarks/structured_speed.py --deploy compile
set -u
pattern=${QUIET_PATTERN:-pfam_from_scratch.py|depth_accuracy.py|compare_criteria.py|schedules_sweep.py|prunekit train|prunekit prune|prunekit compare|prunekit sensitivity}
pids=$(pgrep -f "$pattern" | grep -vx "$$" | tr '\n' ' ')
resume() { [ -n "${pids// }" ] && kill -CONT $pids 2>/dev/null; }
trap resume EXIT INT TERM
[ -n "${pids// }" ] && kill -STOP $pids 2>/dev/null
echo "quiet.sh: paused [${pids% }]" >&2
"$@"
