#!/usr/bin/env bash
# The README's two commands as a new user runs them, on a machine with nothing cached:
# clone the current commit (HEAD of the repository this is run from) into a temporary directory,
# then run `make test` and `make demo` there, with empty caches (a new .venv, which the Makefile
# creates; NUMBA_CACHE_DIR, RAY_TMPDIR, XDG_CACHE_HOME, MPLCONFIGDIR and TMPDIR inside the
# temporary directory). Pip's own cache is reused (packages come from the registry either way).
#
# Prints the wall time of each step and the test summary line; exits non-zero if either fails.
# Removes its own temporary directory, and nothing else, at the end (also when interrupted).
#
# Usage: tools/fresh_clone_check.sh [--dry-run] [--keep]
#   --dry-run  print the steps (and the environment they get), run nothing
#   --keep     keep the temporary directory (its path is printed) to look at the logs
# Environment: MAKE (default make) runs the targets, e.g. MAKE=/path/to/fake-make for a test of
# this script; PYTHON is passed on to the Makefile (the interpreter that creates the venv);
# FRESH_CHECK_TMP (default: the system's temporary directory) is where the directory is made.
set -euo pipefail

dry_run=0
keep=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fresh_clone_check.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

src=$(git rev-parse --show-toplevel)
commit=$(git -C "$src" rev-parse HEAD)
make_cmd=${MAKE:-make}
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no)" ]; then
    echo "note: $src has uncommitted changes; they are not part of the check (it clones $commit)" >&2
fi

# pip's cache stays where it is (XDG_CACHE_HOME changes below would otherwise move it)
pip_cache=${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}

if [ "$dry_run" = 1 ]; then
    tmp="<tmp>"
else
    tmp=$(mktemp -d "${FRESH_CHECK_TMP:-${TMPDIR:-/tmp}}/dsrecon-fresh.XXXXXX")
fi
clone="$tmp/dsrecon"

cleanup() {
    # only the directory this run made (its name came from mktemp above)
    if [ "$dry_run" = 0 ] && [ "$keep" = 0 ] && [ -n "${tmp:-}" ] && [ -d "$tmp" ]; then
        rm -rf -- "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# the environment of both steps: empty caches in $tmp, nothing of the caller's dsrecon set-up
fresh_env=(
    env -u PYTHONPATH -u VIRTUAL_ENV -u PYTHONDONTWRITEBYTECODE -u RAY_ADDRESS -u DSRECON_NO_RAY -u DSRECON_DEBUG
    -u DSRECON_NO_PROGRESS -u NUMBA_DISABLE_JIT
    "NUMBA_CACHE_DIR=$tmp/cache/numba" "RAY_TMPDIR=$tmp/ray" "XDG_CACHE_HOME=$tmp/cache" "MPLCONFIGDIR=$tmp/cache/matplotlib"
    "TMPDIR=$tmp/tmp" "PIP_CACHE_DIR=$pip_cache"
)
if [ -n "${PYTHON:-}" ]; then fresh_env+=("PYTHON=$PYTHON"); fi

steps=("test" "demo")
if [ "$dry_run" = 1 ]; then
    echo "clone:  git clone --quiet $src $clone && git -C $clone checkout --quiet --detach $commit"
    echo "mkdir:  $tmp/cache/numba $tmp/ray $tmp/tmp"
    for s in "${steps[@]}"; do
        echo "run:    (cd $clone && ${fresh_env[*]} $make_cmd $s) > $tmp/make-$s.log 2>&1"
    done
    echo "clean:  rm -rf $tmp"
    exit 0
fi

echo "fresh clone of $commit in $clone"
git clone --quiet "$src" "$clone"
git -C "$clone" checkout --quiet --detach "$commit"
mkdir -p "$tmp/cache/numba" "$tmp/ray" "$tmp/tmp"

status=0
summary=""
for s in "${steps[@]}"; do
    log="$tmp/make-$s.log"
    start=$(date +%s.%N)
    set +e
    (cd "$clone" && "${fresh_env[@]}" "$make_cmd" "$s") >"$log" 2>&1
    rc=$?
    set -e
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" = 0 ]; then
        echo "make $s: ok in ${secs} s"
    else
        echo "make $s: FAILED (exit $rc) after ${secs} s; the last lines of its output:"
        tail -n 40 "$log" | sed 's/^/    /'
        status=1
    fi
    if [ "$s" = test ]; then
        # pytest's last summary line, e.g. "636 passed, 2 skipped in 401.43s" (framed by = without -q)
        summary=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)' "$log" | grep -E ' in [0-9.]+s' | tail -n 1 \
                  | sed -E 's/^=+ //; s/ =+$//' || true)
        echo "make test summary: ${summary:-"(no pytest summary line in the output)"}"
        [ -n "$summary" ] || status=1
    fi
done
if [ "$keep" = 1 ]; then
    echo "kept $tmp (logs: $tmp/make-test.log, $tmp/make-demo.log)"
fi
exit "$status"
