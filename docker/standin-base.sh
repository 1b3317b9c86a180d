#!/bin/sh
# A local stand-in for the pinned python:3.11-slim base, for machines that reach Debian's
# package mirror but no container registry (CI here):
#
#   docker/standin-base.sh ENGINE TAG
#
# debootstraps Debian bookworm (minbase) with Debian's python3.11 and imports it into
# ENGINE (podman or docker) as TAG, unless TAG already exists: the image is the cache,
# so a second run costs one `image exists`. What differs from python:3.11-slim (README,
# "Images") is made to matter as little as possible:
#   - python is Debian's 3.11 (/usr/bin/python3.11, `python` via python-is-python3), not
#     a /usr/local build of the latest 3.11 patch release;
#   - pip and setuptools (Debian's wheels of them) are installed into /usr/local, as in
#     python:slim, so the Dockerfiles' `pip uninstall pip setuptools wheel` works;
#     Debian's EXTERNALLY-MANAGED marker is removed, as python:slim has none;
#   - apt lists, docs and man pages are dropped, as in the slim images.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: standin-base.sh ENGINE TAG" >&2
    exit 64
fi
engine="$1"
tag="$2"
if "$engine" image inspect "$tag" >/dev/null 2>&1; then
    echo "standin-base: $tag is cached"
    exit 0
fi
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
echo "standin-base: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
}
rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
# Debian disables ensurepip for its python; pip runs from the wheel python3-venv ships.
chroot "$root" sh -c 'set -e; for w in /usr/share/python-wheels/pip-*.whl; do pip="$w"; done
    python3 "$pip/pip" install --no-index --find-links /usr/share/python-wheels \
        --no-cache-dir --disable-pip-version-check --root-user-action=ignore --quiet \
        pip setuptools' >"$work/pip.log" 2>&1 || {
    cat "$work/pip.log" >&2
    exit 1
}
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | "$engine" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "standin-base: imported $tag"
