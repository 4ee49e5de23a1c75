#!/usr/bin/env bash
# Test set-up step of `make test`: as root, install what the tests under tests/slurm/ need when it
# is missing: Debian's SLURM and munge (the real cluster), iproute2 (network namespaces: one
# "node" each), openssh-server and pdsh (DeepSpeed's hostfile launcher reaches the nodes over
# ssh). Installs nothing otherwise; those tests then skip with a message saying why. Never fails
# the test run by itself, and never starts a service: the test fixtures start their own daemons.
set -uo pipefail
# binary -> Debian package
declare -A pkg=(
    [slurmctld]=slurm-wlm [slurmd]=slurm-wlm [sbatch]=slurm-wlm [srun]=slurm-wlm
    [munged]=munge [ip]=iproute2 [sshd]=openssh-server [ssh]=openssh-client [pdsh]=pdsh
)
missing=()
for b in "${!pkg[@]}"; do
    if ! command -v "$b" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$b" ]; then
        missing+=("${pkg[$b]}")
    fi
done
if [ "${#missing[@]}" = 0 ]; then
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
    echo "slurm_setup: not root and missing ${missing[*]}: the tests needing them in tests/slurm will be skipped" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm_setup: no apt-get on this system: install ${missing[*]} by hand; tests/slurm will be skipped" >&2
    exit 0
fi
# Debian's maintainer scripts start sshd/munge/slurmd as system services unless a policy says
# no; the tests want none of them running. Add the policy only for this install, if none is there.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# tte_scale tests/support/slurm_setup.sh: no services started by apt\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
fi
echo "slurm_setup: installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "slurm_setup: apt-get install failed: the tests needing ${missing[*]} will be skipped" >&2
fi
if [ "$added_policy" = 1 ]; then
    rm -f "$policy"
fi
exit 0
