#!/usr/bin/env bash
# Fails when nbdev-export or nbdev-clean would change the tree: the notebooks are the source.
set -euo pipefail
bin=${1:-.venv/bin}
snapshot=$(mktemp -d)
trap 'rm -rf "$snapshot"' EXIT
cp -r nbs laretrieval data "$snapshot"/  # data/: where the links of laretrieval/data lead
"$bin"/nbdev-export
"$bin"/nbdev-clean
status=0
for d in nbs laretrieval; do
  if ! diff -r -x __pycache__ -x .ipynb_checkpoints "$snapshot/$d" "$d" >/dev/null; then
    echo "ERROR: nbdev-export/nbdev-clean changed $d/:" >&2
    diff -r -q -x __pycache__ -x .ipynb_checkpoints "$snapshot/$d" "$d" >&2 || true
    status=1
  fi
done
# what the package ships (laretrieval.package.SHIPPED) is reached through links, one copy each: a checkout without
# symbolic links (git config core.symlinks false) would build a wheel without the notebooks, prompts and recipes
for link in laretrieval/data/*; do
  if [ ! -L "$link" ] || [ ! -d "$link" ]; then
    echo "ERROR: $link must be a symbolic link to a folder (git config core.symlinks true; git checkout -- laretrieval/data)" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "nbdev-export and nbdev-clean leave nbs/ and laretrieval/ unchanged; laretrieval/data/ links to what the package ships"
exit $status
