#!/bin/sh
# Build both images with podman or docker (`make images`, `make images-smoke`):
#
#   ENGINE=podman|docker PYTHON_IMAGE=<base> TAG=<tag> docker/build.sh
#
# ENGINE defaults to podman if installed, else docker. PYTHON_IMAGE empty keeps the
# Dockerfiles' pinned python:3.11-slim; docker/standin-base.sh makes a local stand-in.
# With podman (daemonless, as on CI), builds use the host network, the host's CA
# bundle and pip.conf (pip must trust the TLS proxy the host trusts; the files are
# mounted for the build only, never copied into an image), and ulimits this host
# allows (podman's defaults for root exceed what a container here may set).
set -eu

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
    engine="$(command -v podman || command -v docker || true)"
fi
if [ -z "$engine" ]; then
    echo "build.sh: neither podman nor docker found" >&2
    exit 69
fi
tag="${TAG:-dev}"
set --
if [ -n "${PYTHON_IMAGE:-}" ]; then
    set -- --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
fi
case "$(basename "$engine")" in
    podman)
        set -- "$@" --network host $(sh "$(dirname "$0")/podman-ulimits.sh")
        for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
            if [ -f "$file" ]; then
                set -- "$@" --volume "$file:$file:ro"
            fi
        done
        ;;
esac
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for image in collector operator; do
    echo "build.sh: ssmd-$image:$tag ($engine)"
    "$engine" build "$@" --build-arg "REVISION=$revision" \
        -f "Dockerfile.$image" -t "ssmd-$image:$tag" .
done
