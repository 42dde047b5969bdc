#!/usr/bin/env bash
# Make this checkout runnable on a machine where it is not installed and that
# has no network (the lent GPU machine): what `pip install -e .` would do,
# by hand, into $SITE (default /tmp/site):
#   1. the wheels carried in .whl/ (pydantic and the few packages that machine
#      lacks; fetch them with the command in docs/performance.md, "GPU");
#   2. ebmkit_plugins -> ./plugins (a symlink: the import name of the built-ins);
#   3. shortrun_ebm-<version>.dist-info with the entry points of pyproject.toml,
#      so that the registry finds the built-in plug-ins as it does when installed.
# Afterwards run with PYTHONPATH="$PWD:$SITE" (benchmarks/gpu_run.sh does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SITE="${SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-$ROOT/.whl}"
mkdir -p "$SITE"

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if (( ${#wheels[@]} )); then
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" 2>/dev/null; then
    echo "gpu_setup: pip could not install the wheels; unpacking them" >&2
    "$PY" - "$SITE" "${wheels[@]}" <<'PYEOF'
import sys, zipfile
site, wheels = sys.argv[1], sys.argv[2:]
for w in wheels:  # a wheel is a zip laid out as site-packages
    zipfile.ZipFile(w).extractall(site)
PYEOF
  fi
fi

ln -sfn "$ROOT/plugins" "$SITE/ebmkit_plugins"

"$PY" - "$ROOT" "$SITE" <<'PYEOF'
import pathlib, shutil, sys, tomllib
root, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
name, version = project["name"], project["version"]
for old in site.glob(name.replace("-", "_") + "-*.dist-info"):
    shutil.rmtree(old)
info = site / f"{name.replace('-', '_')}-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
lines = []
for group, entries in {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}.items():
    if entries:
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
(info / "entry_points.txt").write_text("\n".join(lines))
(info / "top_level.txt").write_text("ebmkit\nebmkit_plugins\n")
PYEOF

PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "
import importlib.util, ebmkit, ebmkit_plugins, pydantic
for m in ('torchvision', 'accelerate', 'sklearn', 'safetensors'):  # the trainer and the smoke need these
    if importlib.util.find_spec(m) is None:
        print('gpu_setup: WARNING: no', m, '- the training rows and the smoke will fail')
names = sorted(ebmkit.default_registry().components('energy'))
assert 'convnet' in names, names
print('gpu_setup: ebmkit from', ebmkit.__file__, '| plug-ins from', ebmkit_plugins.__path__[0], '| pydantic', pydantic.VERSION, '| energies', ', '.join(names))
"
