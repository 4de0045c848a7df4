#!/bin/sh
# Example handler for otakit's "command" boot backend.
#
# Usage: bootctl-handler.sh STATE_DIR SUBCOMMAND [ARGS]
#   get-primary | get-trial | get-booted | set-trial SLOT TRIES | set-state SLOT good|bad
#
# It keeps the boot state as three small files in STATE_DIR (primary, trial, tries), each
# replaced atomically (write, sync, rename). Adapt the two functions at the end (read_var,
# write_var) to your bootloader's storage; the command logic stays as it is. Your bootloader
# must do, on every boot: if trial is set and tries > 0, decrement tries and boot trial;
# otherwise clear trial and boot primary; and pass otakit.slot=<slot> to the kernel.
set -eu

die() { echo "bootctl-handler: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 STATE_DIR SUBCOMMAND [ARGS]"
state=$1
cmd=$2
shift 2

read_var() { if [ -f "$state/$1" ]; then cat "$state/$1"; fi; }
write_var() {
    printf '%s\n' "$2" > "$state/.$1.tmp"
    sync "$state/.$1.tmp"
    mv -f "$state/.$1.tmp" "$state/$1"
    sync "$state"
}

check_slot() { case "$1" in a|b) ;; *) die "slot: expected a or b, found '$1'" ;; esac; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }

case "$cmd" in
get-primary)
    p=$(read_var primary); check_slot "${p:-}"; echo "$p" ;;
get-trial)
    t=$(read_var trial)
    if [ -z "$t" ]; then echo none; else echo "$t $(read_var tries)"; fi ;;
get-booted)
    sed -n 's/.*otakit\.slot=\([ab]\).*/\1/p' /proc/cmdline ;;
set-trial)
    [ $# -eq 2 ] || die "set-trial: expected SLOT TRIES"
    check_slot "$1"
    case "$2" in ''|*[!0-9]*) die "set-trial: TRIES must be a number, found '$2'" ;; esac
    # tries first: a crash in between leaves the old trial (or none) with a valid count
    write_var tries "$2"
    write_var trial "$1" ;;
set-state)
    [ $# -eq 2 ] || die "set-state: expected SLOT good|bad"
    check_slot "$1"
    case "$2" in
    good)
        # primary first: a crash in between leaves trial == primary, which boots the same slot
        write_var primary "$1"
        write_var trial "" ;;
    bad)
        if [ "$(read_var trial)" = "$1" ]; then write_var trial ""; fi
        if [ "$(read_var primary)" = "$1" ]; then write_var primary "$(other "$1")"; fi ;;
    *) die "set-state: expected good or bad, found '$2'" ;;
    esac ;;
*)
    die "unknown subcommand '$cmd'" ;;
esac
