#!/usr/bin/env bash
# Installs `python3.14` and `python3.15` commands that run CPython on Pyodide under Node, for
# pycache's parity tests only (CPython versions that are not installed on the machine).
#
#   tools/pyodide-python/install.sh [DIR]     (default: $PYCACHE_PYODIDE_DIR, else
#                                              ~/.cache/pycache/pyodide-python)
#
# DIR/<version>/node_modules/pyodide  the pinned npm package
# DIR/bin/python3.14, DIR/bin/python3.15  the commands (sh wrappers around python.mjs)
# DIR/lib/python3.X/python_stdlib.zip     a link to the package's standard library
# The tests look for DIR/bin (client/tests/support/interp.rs). Needs Node 20+ and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-${PYCACHE_PYODIDE_DIR:-$HOME/.cache/pycache/pyodide-python}}"

# command  npm package            CPython
pins=(
  "python3.14 pyodide@314.0.7          3.14.2"
  "python3.15 pyodide@315.0.0-alpha.2  3.15.0rc1"
)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: node and npm are needed to run CPython on Pyodide" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "install.sh: Node $major is too old; Pyodide needs Node 20 or newer" >&2
  exit 1
fi

mkdir -p "$dir/bin"
cp "$here/python.mjs" "$dir/python.mjs"
for pin in "${pins[@]}"; do
  read -r command package cpython <<<"$pin"
  version="${package#pyodide@}"
  prefix="$dir/$version"
  if [ ! -f "$prefix/node_modules/pyodide/pyodide.asm.wasm" ] \
    || [ "$(node -p "require('$prefix/node_modules/pyodide/package.json').version")" != "$version" ]; then
    mkdir -p "$prefix"
    npm install --silent --no-audit --no-fund --no-save --prefix "$prefix" "$package" >/dev/null
  fi
  cat >"$dir/bin/$command" <<WRAPPER
#!/bin/sh
# CPython $cpython on $package (Pyodide) under Node; written by tools/pyodide-python/install.sh.
case "\$0" in /*) exe="\$0" ;; *) exe="\$PWD/\$0" ;; esac
PYODIDE_PYTHON_EXECUTABLE="\$exe" exec node "$dir/python.mjs" "$prefix/node_modules/pyodide" "\$@"
WRAPPER
  chmod +x "$dir/bin/$command"
  mkdir -p "$dir/lib/$command"
  ln -sfn "$prefix/node_modules/pyodide/python_stdlib.zip" "$dir/lib/$command/python_stdlib.zip"
  echo "$dir/bin/$command: CPython $cpython ($package)"
done
