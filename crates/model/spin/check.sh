#!/usr/bin/env bash
# Model-checks lease.pml, the lease and fencing protocol, with Spin (see README.md here).
#
# The design must pass: an exhaustive search of its whole state space with no assertion
# violated. Every mutant must fail, with a counterexample on the property it breaks, and
# every cover goal must be reached, so that the properties are known not to hold vacuously.
# Everything happens in a temporary directory, removed on exit. Needs `spin` and `gcc`
# (Debian: `apt-get install spin gcc`).
#
# Usage: check.sh [--deep]
#   --deep  also checks the design with three terms (three leaders in turn), and with
#           finer time steps; a few minutes more.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
model="$here/lease.pml"

deep=false
case "${1:-}" in
    "") ;;
    --deep) deep=true ;;
    *)
        echo "usage: $0 [--deep]" >&2
        exit 2
        ;;
esac

for tool in spin gcc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: $tool is missing (Debian: apt-get install spin gcc)" >&2
        exit 2
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# pan: safety only (assertions, no never claim), exhaustive (exact state storage, no
# bit-state hashing), memory bounded (MiB, overridable), and a search stack deep enough
# that no path is cut off (pan reports it if one is).
memory_limit_mib="${SPIN_MEMORY_LIMIT_MIB:-4096}"
pan_cflags=(-O2 -w -DSAFETY "-DMEMLIM=$memory_limit_mib")
pan_args=(-m500000 -w24)

# What pan prints for each property's assertion when it fails.
property_a='>=last_accepted)'
property_b='!(((a_rem>0)&&(b_state==2)))'

failures=0

# run NAME SPIN_FLAGS...: generates, builds and runs pan for lease.pml with these -D
# flags in $work/NAME, leaving pan's report in $work/NAME/pan.out.
run() {
    local name="$1"
    shift
    local dir="$work/$name"
    mkdir "$dir"
    cp "$model" "$dir/lease.pml"
    (
        cd "$dir"
        if ! spin "$@" -a lease.pml >spin.out 2>&1; then
            cat spin.out >&2
            exit 1
        fi
        gcc "${pan_cflags[@]}" -o pan pan.c
        # pan's exit status says nothing about the result: its report is parsed below.
        ./pan "${pan_args[@]}" >pan.out 2>&1 || true
    )
}

# summary FILE: states, transitions, memory and time from a pan report.
summary() {
    local stored transitions memory elapsed
    stored="$(awk '/states, stored/ { print $1 }' "$1")"
    transitions="$(awk '/transitions \(= stored\+matched\)/ { print $1 }' "$1")"
    memory="$(awk '/total actual memory usage/ { print $1 }' "$1")"
    elapsed="$(awk '/pan: elapsed time/ { print $4 }' "$1")"
    echo "${stored:-?} states stored, ${transitions:-?} transitions, ${memory:-?} MB, ${elapsed:-?} s"
}

# trail NAME SPIN_FLAGS...: prints the counterexample pan found in $work/NAME, told by
# the model's printf lines.
trail() {
    local dir="$work/$1"
    shift
    if [[ -f "$dir/lease.pml.trail" ]]; then
        (cd "$dir" && spin "$@" -t -T lease.pml) | sed -n '/^spin: /q; s/^/        /p'
    fi
}

# expect_pass NAME SPIN_FLAGS...
expect_pass() {
    local name="$1"
    shift
    run "$name" "$@"
    local out="$work/$name/pan.out"
    if grep -q 'errors: 0$' "$out" &&
        ! grep -qiE 'max search depth too small|memlim|out of memory|search not completed' "$out"; then
        echo "ok    $name: no violation in the whole state space ($(summary "$out"))"
    else
        echo "FAIL  $name: expected no violation"
        sed 's/^/      /' "$out"
        trail "$name" "$@"
        failures=$((failures + 1))
    fi
}

# expect_violation NAME WHAT TRAIL SPIN_FLAGS...: pan must report an assertion violated:
# property (a) or (b) for WHAT=a or b, a cover goal (neither property) for WHAT=cover.
# With TRAIL=trail, the counterexample is printed.
expect_violation() {
    local name="$1" what="$2" show="$3"
    shift 3
    run "$name" "$@"
    local dir="$work/$name"
    local out="$dir/pan.out"
    local violated matched=false
    violated="$(grep 'assertion violated' "$out" || true)"
    case "$what" in
        a) grep -qF -- "$property_a" <<<"$violated" && matched=true ;;
        b) grep -qF -- "$property_b" <<<"$violated" && matched=true ;;
        cover)
            if [[ -n "$violated" ]] &&
                ! grep -qF -e "$property_a" -e "$property_b" <<<"$violated"; then
                matched=true
            fi
            ;;
    esac
    if $matched; then
        echo "ok    $name: violated as it must be ($(summary "$out"))"
        if [[ "$show" == trail ]]; then
            trail "$name" "$@"
        fi
    else
        echo "FAIL  $name: expected a violation of ${what/cover/the cover goal}"
        sed 's/^/      /' "$out"
        failures=$((failures + 1))
    fi
}

echo "Spin: $(spin -V)"

expect_pass design

# Mutants: each breaks one rule; the property must fail.
expect_violation receipt b trail -DMUTANT_RECEIPT
expect_violation margin b trail -DMUTANT_MARGIN
expect_violation suspend b trail -DMUTANT_SUSPEND
expect_violation no-round b trail -DMUTANT_NOROUND
expect_violation no-blank b trail -DMUTANT_NOBLANK
expect_violation no-fence a trail -DMUTANT_NOFENCE

# Cover goals: states the design must reach (lease.pml, COVER).
for goal in 1 2 3 4 5; do
    expect_violation "cover-$goal" cover no "-DCOVER=$goal"
done

if $deep; then
    # Three terms (an expiry entry can wait through two elections), one keepalive.
    expect_pass design-3-terms -DNODES=3 -DKA=1
    # Finer time: a TTL spans 4 to 6 ticks instead of 2 to 3 (the same rates and the
    # same margin relative to the TTL), one keepalive.
    finer=(-DTTL=12 -DMARGIN=4 -DKA=1)
    expect_pass design-finer-time "${finer[@]}"
    expect_violation margin-finer-time b no "${finer[@]}" -DMUTANT_MARGIN
fi

if ((failures > 0)); then
    echo "check.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "check.sh: all checks passed"
