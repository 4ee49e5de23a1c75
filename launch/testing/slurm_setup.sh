#!/usr/bin/env bash
# Test set-up step of `make test`: as root, install Debian's SLURM and munge when missing so the
# tests under tests/slurm/ run against a real (one-node) cluster. Installs nothing otherwise;
# those tests then skip with a message saying why. Never fails the test run by itself.
set -uo pipefail
need=(slurmctld slurmd munged sbatch srun)
missing=0
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing=1
done
if [ "$missing" = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm_setup: SLURM/munge not installed and not root: tests/slurm will be skipped" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm_setup: no apt-get on this system: install slurm-wlm and munge by hand; tests/slurm will be skipped" >&2
    exit 0
fi
echo "slurm_setup: installing slurm-wlm and munge (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }; then
    echo "slurm_setup: apt-get install failed: tests/slurm will be skipped" >&2
fi
exit 0
