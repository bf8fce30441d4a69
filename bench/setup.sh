#!/usr/bin/env bash
# Sets up what the benchmarks need on a fresh Debian machine: wrk (and h2load) from Debian's
# packages, and a virtualenv on one interpreter with Tether and the pinned peers, so that every
# server of a run, Tether included, runs on that interpreter.
#
#   bash bench/setup.sh [PYTHON [VENV]]   # PYTHON: default python3; VENV: default bench/.venv-3.X
#
# (bench/run --python 3.X finds the interpreter and calls this.)
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if ! command -v wrk >/dev/null 2>&1 || ! command -v h2load >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nghttp2-client >/dev/null
fi
PYTHON=${1:-python3}
VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV=${2:-.venv-$VERSION}
# A venv made by another interpreter (or another version of it) is made again.
if [ ! -x "$VENV/bin/python" ] || [ "$("$VENV/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)" \
        != "$("$PYTHON" -c 'import platform; print(platform.python_version())')" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -e ..
