#!/bin/bash
# Every tool has --help (exit 0) and a man page that documents every long
# option its --help lists; every man page renders without warnings.
. "$(dirname "$0")/lib.sh"
cd "$RL_ROOT"
for tool in "$RL_BIN"/rl-*; do
    name=$(basename "$tool")
    page=man/$name.1
    if ! "$tool" --help > "$TMP/help" 2>&1; then
        fail "$name --help exits 0"; continue
    fi
    ok "$name --help exits 0"
    if [ ! -f "$page" ]; then fail "$name has a man page" "missing $page"; continue; fi
    ok "$name has a man page"
    missing=
    for opt in $(grep -oE -- '--[a-z][a-z0-9-]+' "$TMP/help" | sort -u); do
        # roff writes dashes as \- ; accept either spelling
        pat=$(printf '%s' "$opt" | sed 's/-/\\\\?-/g')
        grep -qE -- "$pat" "$page" || missing="$missing $opt"
    done
    if [ -z "$missing" ]; then ok "$name: man page documents every option of --help"
    else fail "$name: man page documents every option of --help" "missing:$missing"; fi
done
for page in man/*.[157]; do
    if command -v man > /dev/null; then
        warn=$(LC_ALL=C MANWIDTH=80 man --warnings -l "$page" 2>&1 > /dev/null | head -3)
        if [ -z "$warn" ]; then ok "$page renders cleanly"; else fail "$page renders cleanly" "$warn"; fi
    else
        skip "$page renders cleanly" "man not installed"
    fi
done
finish
