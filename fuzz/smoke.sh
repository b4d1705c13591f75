#!/usr/bin/env bash
# Runs every cargo-fuzz target for a few seconds each: a smoke run, not a campaign.
#
#   fuzz/smoke.sh [SECONDS]        # default 10 seconds per target
#
# Builds the targets once (`cargo fuzz build -s none`: no sanitizer, stable toolchain), then runs
# each from its seeds in a scratch corpus removed at the end, so a run leaves nothing behind but
# crash artifacts (artifacts/<target>/). The seeds are the files of corpus/<target>/ that git
# tracks or that have a name (seed_corpus's, regression inputs); inputs local fuzz runs added
# there (named by their SHA-1) are left out, so a grown local corpus does not lengthen the run.
# Prints one line per target and exits 1 if any target crashed. Without cargo-fuzz it prints
# "skipped: cargo-fuzz not installed" and exits 0.
set -euo pipefail

seconds="${1:-10}"
case "$seconds" in
    '' | *[!0-9]*)
        echo "usage: $0 [SECONDS]" >&2
        exit 2
        ;;
esac
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "skipped: cargo-fuzz not installed"
    exit 0
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/dlog-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# journal_replay's working directory (dlog-fuzz-replay-<pid>) goes there too.
export DLOG_FUZZ_DIR="$scratch"

cargo fuzz build -s none
failed=0
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/corpus/$target"
    tracked="$(git ls-files -- "corpus/$target" 2>/dev/null || true)"
    for file in "corpus/$target"/*; do
        [[ -f "$file" ]] || continue
        if [[ ! "${file##*/}" =~ ^[0-9a-f]{40}$ ]] || grep -qxF -- "$file" <<<"$tracked"; then
            cp -- "$file" "$scratch/corpus/$target/"
        fi
    done
    log="$scratch/$target.log"
    if cargo fuzz run -s none "$target" "$scratch/corpus/$target" -- \
        -max_total_time="$seconds" >"$log" 2>&1; then
        echo "$target: ok, $(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1 || echo 'no stats')"
    else
        failed=1
        echo "$target: FAILED (artifacts/$target/); the end of its log:"
        tail -n 40 "$log"
    fi
done
exit "$failed"
