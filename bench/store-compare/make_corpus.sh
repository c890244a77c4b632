#!/bin/sh
# Builds the workload: the CPython 3.11 standard library (site-packages excluded), compiled.
# Usage: ./make_corpus.sh DIR   (DIR/src gets the .py files and their __pycache__/*.pyc)
set -e
out=${1:?usage: make_corpus.sh DIR}
stdlib=$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')
rm -rf "$out/src"; mkdir -p "$out/src"
(cd "$stdlib" && find . -name '*.py' -not -path './site-packages/*' | tar -cf - -T -) | tar -xf - -C "$out/src"
python3 -m compileall -q "$out/src" >/dev/null 2>&1 || true   # a few test files do not compile
echo "$(find "$out/src" -name '*.py' | wc -l) sources, $(find "$out/src" -name '*.pyc' | wc -l) pycs"
