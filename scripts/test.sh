#!/usr/bin/env bash
# The test command (README.md; `.ci/run` calls exactly this). The tests read Fashion-MNIST and
# never download it, so this first puts it where they look, through the project's own verified
# fetch (`protocon data fetch`: files already there, the workplace copy beside the repository,
# the Debian package installed or fetched with apt-get, then the canonical URL; every file
# SHA-256 checked), then runs the whole suite. Arguments go to `cargo test`.
#
#   scripts/test.sh                 # what CI runs
#   scripts/test.sh -p protocon     # one package
#
# With PROTOCON_TEST_DATA set (a directory holding the four .gz files) nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PROTOCON_TEST_DATA:-}" ]; then
  from=()
  [ -d ../shared/data/fashion-mnist ] && from=(--from ../shared/data/fashion-mnist)
  # Into $PROTOCON_DATA/fashion-mnist, or ./data/fashion-mnist: where `train` puts it too.
  cargo run --release --quiet -- data fetch fashion-mnist "${from[@]}"
fi
cargo test --workspace --release "$@"
