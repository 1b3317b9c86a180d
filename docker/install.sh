#!/bin/sh
# The one install recipe of ssmd's images:
#
#   install.sh SRC VENV [EXTRAS]
#
# builds ssmd's wheel from the source tree SRC, creates the virtual environment VENV
# without pip, and installs the wheel into it with EXTRAS (e.g. "[operator]") and its
# dependencies from the package index: no dev extras, no pip cache, nothing written
# outside VENV but a temporary directory.
#
# Dockerfile.collector and Dockerfile.operator run it in their build stage, and
# tests/test_images.py runs those same RUN lines on the host (paths remapped) and then
# the entrypoints, so what CI proves is what the images contain.
#
# PYTHON (default python3) runs pip and becomes the venv's base interpreter; in the
# images that is the base image's python in both stages, so the venv copied into the
# runtime stage points at the same interpreter path.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: install.sh SRC VENV [EXTRAS]" >&2
    exit 64
fi
python="${PYTHON:-python3}"
venv="$2"
extras="${3:-}"
# A bare word is a requirement to pip ("src" would fetch a package named src from the
# index): make SRC unmistakably a path.
case "$1" in
    /* | ./* | ../*) src="$1" ;;
    *) src="./$1" ;;
esac

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT

# Only ssmd itself is built; every dependency publishes wheels, so no compiler is needed.
"$python" -m pip --no-cache-dir --no-input --disable-pip-version-check \
    wheel --no-deps --wheel-dir "$wheels" "$src"

# The wheel is installed by path, never by name: asking the index for "ssmd" could
# fetch an unrelated package of that name.
set -- "$wheels"/ssmd-*.whl
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "install.sh: expected exactly one ssmd-*.whl from the build, found: $*" >&2
    exit 1
fi

"$python" -m venv --without-pip "$venv"
# pip runs from outside and targets the venv (--python), so the venv carries no pip.
"$python" -m pip --no-cache-dir --no-input --disable-pip-version-check \
    --python "$venv/bin/python" install "$1$extras"
