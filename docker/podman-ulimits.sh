#!/bin/sh
# `--ulimit` flags for podman: rootful podman asks runc for nofile and nproc limits
# above what a container on a shared host (such as CI) may set, and every container
# then fails with "error setting rlimit ... operation not permitted". These stay at or
# below this process's hard limits, capped at values ssmd never comes near.
set -eu
hard() {  # the hard limit named $1 in /proc/self/limits, capped at $2
    awk -v name="$1" -v cap="$2" '
        index($0, name) == 1 {
            n = split(substr($0, length(name) + 1), f, " ")
            h = f[2]
            print (h == "unlimited" || h + 0 > cap) ? cap : h
        }' /proc/self/limits
}
nofile="$(hard "Max open files" 16384)"
nproc="$(hard "Max processes" 4096)"
echo "--ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
