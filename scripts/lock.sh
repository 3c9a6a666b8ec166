#!/usr/bin/env bash
# Rewrites requirements.lock (runtime: the image) and requirements-dev.lock (what `make setup`
# installs) from requirements.txt and requirements-dev.txt, every package pinned with the
# hashes of its files on PyPI. `make setup` and the Dockerfile install with --require-hashes,
# so a package whose file changed on the index, or one not in the lock, is refused.
# Run after changing a pin: `make lock`, then commit the .txt and .lock files together.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools" lock.in.tmp' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install -q --disable-pip-version-check pip-tools==7.6.2
for name in requirements requirements-dev; do
    printf -- "-r %s.txt\n" "$name" >lock.in.tmp
    # PIP_FIND_LINKS would end up in the lock as a local path: the index only.
    PIP_FIND_LINKS= "$tools/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras \
        --no-header --no-annotate --output-file "$name.lock" lock.in.tmp
    sed -i '/^--find-links/d; 1{/^$/d}' "$name.lock"
done
echo "lock: requirements.lock and requirements-dev.lock rewritten"
