#!/usr/bin/env bash
# The device install, one command: otakit-device and only what it imports, hash-locked.
#
#   tools/install-device.sh TARGET [WHEEL]
#
# Makes a virtual environment at TARGET without pip (a device never installs anything
# itself), installs requirements/device.lock into it with --require-hashes, then the otakit
# wheel with --no-deps (WHEEL, or one built here from this source tree). The pip that does it
# is the building machine's: PYTHON (default python3) must have pip >= 22.3 and, to build the
# wheel, setuptools (the full install has both). See docs/OPERATIONS.md, "Building a device
# image".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:?usage: install-device.sh TARGET [WHEEL]}"
wheel="${2:-}"
py="${PYTHON:-python3}"
pip() { "$py" -m pip --disable-pip-version-check --no-input -q "$@"; }

"$py" -m venv --without-pip "$target"
pip --python "$target/bin/python" install --require-hashes -r "$here/requirements/device.lock"
if [ -z "$wheel" ]; then
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  # build from a copy: an in-tree build would leave build/ in the source tree
  cp -r "$here/pyproject.toml" "$here/README.md" "$here/verifier" "$here/signer" "$here/repo" \
    "$build/"
  pip wheel --no-deps --no-build-isolation -w "$build/dist" "$build"
  wheel="$(ls "$build"/dist/otakit-*.whl)"
fi
pip --python "$target/bin/python" install --no-deps "$wheel"
