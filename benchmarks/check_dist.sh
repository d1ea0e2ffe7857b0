#!/usr/bin/env bash
# Build the sdist and wheel the way a release would, install the wheel into a fresh virtual environment,
# and run the sdist's tests against the installed wheel (not against src/).
#
#   benchmarks/check_dist.sh              # the working tree: tracked files plus untracked ones git does not ignore
#   benchmarks/check_dist.sh --ref HEAD   # a commit (git archive), e.g. the tag to be released
#   KEEP=1 benchmarks/check_dist.sh       # keep the temporary directory (its path is printed)
#   PYTEST_ARGS="-x -q tests/test_io.py" benchmarks/check_dist.sh   # a subset of the tests
#
# Checks: the wheel holds the devs package, its dist-info and nothing else; the sdist holds LICENSE, README.md,
# pyproject.toml, src/devs and tests/; `import devs` in the fresh environment resolves to its site-packages;
# the `devs` command runs; pytest passes. Needs python3 with venv, git, and a reachable package index
# (build, setuptools, torch==2.13.0 and the dependencies are installed into the temporary environments).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
REF=""
if [ "${1:-}" = "--ref" ]; then REF=${2:?--ref needs a commit}; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/devs-dist.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
step() { printf '\n== %s\n' "$*"; }

step "source copy in $WORK/src-copy (${REF:-working tree})"
mkdir "$WORK/src-copy"
if [ -n "$REF" ]; then
  git archive "$REF" | tar -x -C "$WORK/src-copy"
else
  git ls-files -z --cached --others --exclude-standard \
    | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | tar --null -T - -c | tar -x -C "$WORK/src-copy"
fi

step "python -m build (sdist, then the wheel from the sdist)"
"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/pip" install -q build
# -W error::DeprecationWarning would also trip on warnings from pip itself; grep the log instead.
"$WORK/build-env/bin/python" -m build --outdir "$WORK/dist" "$WORK/src-copy" 2>&1 | tee "$WORK/build.log" | tail -n 3
if grep -n -i "deprecat" "$WORK/build.log"; then echo "FAIL: the build warns about deprecated metadata"; exit 1; fi
SDIST=$(ls "$WORK"/dist/*.tar.gz)
WHEEL=$(ls "$WORK"/dist/*.whl)
ls -l "$WORK/dist"

step "wheel contents"
"$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names})
print(f"{len(names)} files; top level: {', '.join(tops)}")
stray = [t for t in tops if t != "devs" and not t.endswith(".dist-info")]
licenses = [n for n in names if ".dist-info/licenses/" in n]
print("licenses:", ", ".join(licenses) or "none")
if stray or not licenses or not any(n == "devs/__init__.py" for n in names):
    sys.exit(f"FAIL: stray top-level entries {stray} or no LICENSE / devs/__init__.py in the wheel")
EOF

step "sdist contents"
"$PYTHON" - "$SDIST" <<'EOF'
import sys, tarfile
names = [n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n]
dirs = sorted({n.split("/")[0] for n in names})
print(f"{len(names)} entries; top level: {', '.join(dirs)}")
need = ["LICENSE", "README.md", "pyproject.toml", "src/devs/__init__.py", "tests/conftest.py"]
missing = [n for n in need if n not in names]
if missing:
    sys.exit(f"FAIL: the sdist lacks {missing}")
EOF

step "fresh environment with the wheel (and its [test] extra)"
"$PYTHON" -m venv "$WORK/test-env"
"$WORK/test-env/bin/pip" install -q torch==2.13.0 "$WHEEL[test]"
mkdir "$WORK/tests-from-sdist"
tar -xzf "$SDIST" -C "$WORK/tests-from-sdist"
TESTROOT=$(ls -d "$WORK"/tests-from-sdist/*/)
rm -rf "$TESTROOT/src"  # the tests can only find devs in the environment's site-packages
# tests/test_data.py looks for the shared data sets in ../shared/data next to the checkout; link them if present.
if [ -d "$REPO/../shared/data" ]; then ln -s "$(cd "$REPO/../shared" && pwd)" "$WORK/tests-from-sdist/shared"; fi
cd "$TESTROOT"
"$WORK/test-env/bin/python" - "$WORK/test-env" <<'EOF'
import sys, devs
from importlib.metadata import distribution
site = sys.argv[1]
print("devs", devs.__version__, "from", devs.__file__)
dist = distribution("devs-distill")
print("distribution", dist.metadata["Name"], dist.version, "license", dist.metadata["License-Expression"])
if not devs.__file__.startswith(site) or dist.version != devs.__version__:
    sys.exit("FAIL: devs is not the installed wheel, or its version differs from the distribution's")
EOF
"$WORK/test-env/bin/devs" --version

step "pytest (sdist's tests against the installed wheel)"
# shellcheck disable=SC2086
"$WORK/test-env/bin/python" -m pytest --import-mode=importlib ${PYTEST_ARGS:-}
