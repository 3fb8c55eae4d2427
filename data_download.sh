#!/usr/bin/env bash
# data_download.sh -- download and unpack ISIC 2016 Part 3 (lesion classification) for vqlesson.
#
# Data: ISIC 2016 challenge, Part 3 "Lesion Classification", released under CC-0 by the
# International Skin Imaging Collaboration. Cite:
#   D. Gutman, N. C. F. Codella, E. Celebi, B. Helba, M. Marchetti, N. Mishra, A. Halpern,
#   "Skin Lesion Analysis toward Melanoma Detection: A Challenge at the International Symposium
#   on Biomedical Imaging (ISBI) 2016, hosted by the International Skin Imaging Collaboration
#   (ISIC)", arXiv:1605.01397, 2016.
#
# Usage: bash data_download.sh [ROOT]      (ROOT defaults to data/isic2016 beside this script)
#        bash data_download.sh --help
#
# Result (what vqlesson's ISIC2016(root) loader reads):
#   ROOT/ISBI2016_ISIC_Part3_Training_Data/*.jpg       900 JPEGs (ISIC_0000000.jpg ...)
#   ROOT/ISBI2016_ISIC_Part3_Training_GroundTruth.csv   900 rows, no header: ISIC_0000000,benign
#   ROOT/ISBI2016_ISIC_Part3_Test_Data/*.jpg           379 JPEGs
#   ROOT/ISBI2016_ISIC_Part3_Test_GroundTruth.csv       379 rows, no header: ISIC_0000003,0.0
#
# How it works: each missing file is fetched with curl into ROOT/.download/FILE.part (resumed
# with a Range request when a .part is left from an interrupted run; restarted cleanly when the
# server does not honour ranges), renamed to ROOT/.download/FILE when complete, then verified:
# SHA-256 where a hash is known, row counts for the CSVs, JPEG counts for the zips, and that
# every CSV id has an image. Only when all needed files pass are they installed: zips are
# extracted (JPEGs only, __MACOSX/ skipped, with or without the top folder inside the zip) into
# a temporary folder inside ROOT/.download and moved into place with one rename, so a half
# extracted folder is never visible under the name the loader reads. Extraction, counting and
# hashing use python3 (zipfile, hashlib), so unzip and sha256sum are not needed.
# A run where everything is already present and verified is a no-op. A file put into ROOT by
# hand (one of the zips or CSVs) is used as it is instead of being downloaded.
#
# Environment overrides:
#   ISIC2016_BASE_URLS         space-separated base URLs tried in order, per file (default:
#                              https://isic-archive.s3.amazonaws.com/challenges/2016/
#                              https://isic-challenge-data.s3.amazonaws.com/2016/)
#   ISIC2016_EXPECT_TRAIN      expected training images and CSV rows (default 900)
#   ISIC2016_EXPECT_TEST       expected test images and CSV rows (default 379)
#   ISIC2016_SHA256_TRAIN_ZIP  expected SHA-256 of the training zip (default: the published
#                              value; set to empty to skip the check)
#   ISIC2016_SHA256_TRAIN_CSV  expected SHA-256 of the training CSV (likewise)
# ISIC publishes no checksums; the two defaults are third-party published values. The test
# files are checked by counts and zip CRCs only.
#
# Exit status: 0 success or nothing to do; 1 download or verification failed; 2 usage error or
# a missing tool.
set -euo pipefail

readonly TRAIN_ZIP="ISBI2016_ISIC_Part3_Training_Data.zip"
readonly TRAIN_CSV="ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
readonly TEST_ZIP="ISBI2016_ISIC_Part3_Test_Data.zip"
readonly TEST_CSV="ISBI2016_ISIC_Part3_Test_GroundTruth.csv"
# Order of work: the small CSVs first, so a bad connection or hash shows before the big zips.
readonly FILES=("$TRAIN_CSV" "$TEST_CSV" "$TRAIN_ZIP" "$TEST_ZIP")

readonly DEFAULT_BASE_URLS="https://isic-archive.s3.amazonaws.com/challenges/2016/ https://isic-challenge-data.s3.amazonaws.com/2016/"
readonly DEFAULT_SHA256_TRAIN_ZIP="d78bd1de08511b514e58784c91fd2d8dab24e407cafd023a7debbceb9155ffb2"
readonly DEFAULT_SHA256_TRAIN_CSV="0ffadd63b7cec650cddfbe5df54d1d3167453fe6004c2bbf05824184b0c4d405"
readonly CHALLENGE_PAGE="https://challenge.isic-archive.com/data/#2016"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
readonly SCRIPT_DIR
SCRIPT_NAME="$(basename "${BASH_SOURCE[0]:-$0}")"
readonly SCRIPT_NAME

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
usage() {
    cat <<EOF
Usage: bash $SCRIPT_NAME [ROOT]
       bash $SCRIPT_NAME --help

Download the ISIC 2016 Part 3 (lesion classification) images and labels and unpack them into
ROOT (default: data/isic2016 beside this script, i.e. $SCRIPT_DIR/data/isic2016):

  ROOT/ISBI2016_ISIC_Part3_Training_Data/*.jpg       900 JPEGs (about 602 MB zipped)
  ROOT/ISBI2016_ISIC_Part3_Training_GroundTruth.csv   900 rows: ISIC_0000000,benign|malignant
  ROOT/ISBI2016_ISIC_Part3_Test_Data/*.jpg           379 JPEGs (about 232 MB zipped)
  ROOT/ISBI2016_ISIC_Part3_Test_GroundTruth.csv       379 rows: ISIC_0000003,0.0|1.0

This is the layout vqlesson's ISIC2016(root) reads. An interrupted download is resumed when the
script is run again; a run with everything already present and verified does nothing. Files are
verified by SHA-256 (training zip and CSV) and by image and row counts; nothing is put in place
before it passes. Needs curl and python3 (or python 3); unzip and sha256sum are not used.

Environment overrides:
  ISIC2016_BASE_URLS         space-separated base URLs, tried in order for each file; default:
                               ${DEFAULT_BASE_URLS% *}
                               ${DEFAULT_BASE_URLS#* }
  ISIC2016_EXPECT_TRAIN      expected number of training images and CSV rows (default 900)
  ISIC2016_EXPECT_TEST       expected number of test images and CSV rows (default 379)
  ISIC2016_SHA256_TRAIN_ZIP  expected SHA-256 of $TRAIN_ZIP
                             (default: the published value; set to empty to skip the check)
  ISIC2016_SHA256_TRAIN_CSV  expected SHA-256 of $TRAIN_CSV
                             (default: the published value; set to empty to skip the check)

Without internet: download the four files by hand from the ISIC challenge page
  $CHALLENGE_PAGE
into ROOT and run this script to verify and unpack them, or use the offline synthetic set
instead: make_loaders(source="synthetic") (SyntheticLesions).

Alternative: ISIC's own CLI, isic-cli (pip install isic-cli), e.g.
  isic image download --collections 74 DIR
fetches the 2016 training collection as one flat folder with the labels in the archive
metadata CSV; vqlesson's ImageFolderDataset reads that, the ISIC2016 loader does not.

Data: CC-0, International Skin Imaging Collaboration. Cite Gutman et al., "Skin Lesion Analysis
toward Melanoma Detection: A Challenge at ISBI 2016, hosted by ISIC", arXiv:1605.01397, 2016.
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() {
    # die STATUS MESSAGE...: print each message line to stderr and exit with STATUS.
    local status="$1"
    shift
    local line
    for line in "$@"; do printf '%s\n' "$line" >&2; done
    exit "$status"
}

offline_advice() {
    # offline_advice PART: the three ways on when a file cannot be had, printed after a download
    # error; PART is the file's .part, mentioned when a partial download is kept there.
    say "What to do:"
    if [[ -s "$1" ]]; then
        say "  - check your internet connection (and proxy settings) and run this script again;"
        say "    it resumes from the $(wc -c <"$1" | tr -d ' ') bytes kept in $1"
    else
        say "  - check your internet connection (and proxy settings) and run this script again"
    fi
    say "  - or download the four ISIC 2016 Part 3 files by hand from $CHALLENGE_PAGE"
    say "    into $ROOT and run this script again to verify and unpack them"
    say "  - or work offline with the synthetic lesion set: make_loaders(source=\"synthetic\")"
    say "    (SyntheticLesions), which needs no download"
}

curl_reason() {
    # curl_reason EXIT_CODE HTTP_CODE -> short human reason on stdout.
    local rc="$1" code="$2"
    [[ "$code" != "000" ]] || code=""
    case "$rc" in
        6) echo "could not resolve the host (offline or DNS failure)" ;;
        7) echo "could not connect to the server" ;;
        18) echo "transfer cut off before the end; the partial file is kept and resumed next run" ;;
        22) echo "HTTP error $code" ;;
        28) echo "timed out" ;;
        33) echo "server does not support resuming" ;;
        35 | 60) echo "TLS/SSL error (check the system clock and CA certificates)" ;;
        56) echo "connection lost while receiving data; the partial file is kept" ;;
        *) echo "curl exit code $rc${code:+, HTTP $code}" ;;
    esac
}

pick_python() {
    # Prints the path of a Python >= 3.6: python3, else python. The interpreter's own path is
    # used from then on, so wrappers such as pyenv shims are not started for every call.
    local candidate exe
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            exe="$("$candidate" -c 'import sys; assert sys.version_info >= (3, 6); print(sys.executable)' 2>/dev/null)"; then
            if [[ -n "$exe" && -x "$exe" ]]; then echo "$exe"; else echo "$candidate"; fi
            return 0
        fi
    done
    return 1
}

check_count_var() {
    # check_count_var NAME VALUE: VALUE must be a positive integer.
    if ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        die 2 "error: $1 must be a positive integer, got '$2'"
    fi
}

check_hash_var() {
    # check_hash_var NAME VALUE: VALUE must be empty (skip) or 64 hex digits.
    if [[ -n "$2" && ! "$2" =~ ^[0-9a-fA-F]{64}$ ]]; then
        die 2 "error: $1 must be 64 hex digits (a SHA-256) or empty to skip the check, got '$2'"
    fi
}

# Python side: hashing, CSV and zip checks, extraction. Subcommands (exit 0 ok, 1 check failed
# with the reason on stderr, other codes for unexpected errors):
#   sha256 FILE                  -> hex digest on stdout
#   csv FILE EXPECT              -> checks rows; summary on stdout
#   zip FILE EXPECT              -> checks it opens and holds EXPECT JPEGs; summary on stdout
#   countdir DIR                 -> number of *.jpg files in DIR on stdout
#   crossids IMAGES CSV          -> IMAGES (zip or folder) and CSV name the same ids
#   extract FILE DEST EXPECT     -> JPEGs of FILE flattened into DEST (CRC-checked), count checked
IFS= read -r -d '' PY_HELPER <<'PY' || true
import csv, hashlib, io, os, re, sys, zipfile

LABELS = {"benign": 0, "0": 0, "0.0": 0, "malignant": 1, "1": 1, "1.0": 1}
ID_RE = re.compile(r"^ISIC_\d+$")


def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def is_jpeg_name(name):
    base = name.rsplit("/", 1)[-1]
    return (not name.startswith("__MACOSX/") and "/__MACOSX/" not in name
            and not base.startswith("._") and base.lower().endswith((".jpg", ".jpeg")))


def jpeg_members(zf):
    """JPEG members of the zip: (member, flat file name); duplicate file names are an error."""
    seen, out = {}, []
    for info in zf.infolist():
        if info.is_dir() or not is_jpeg_name(info.filename):
            continue
        base = info.filename.rsplit("/", 1)[-1]
        if base in seen:
            fail("two images named %s in the zip (%s and %s)" % (base, seen[base], info.filename))
        seen[base] = info.filename
        out.append((info, base))
    return out


def open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        fail("%s is not a readable zip file (%s)" % (os.path.basename(path), exc))


def read_csv(path):
    """Rows (id, label) of a ground-truth CSV; a first row that is not ISIC_<digits> is a header."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail("%s is not a UTF-8 text file" % os.path.basename(path))
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        first = row[0].strip()
        if not ID_RE.match(first):
            if lineno == 1:
                continue  # header row
            fail("%s line %d is not 'ISIC_<digits>,<label>': %r"
                 % (os.path.basename(path), lineno, ",".join(row)[:80]))
        if len(row) < 2 or row[1].strip().lower() not in LABELS:
            fail("%s line %d has no label benign/malignant/0.0/1.0: %r"
                 % (os.path.basename(path), lineno, ",".join(row)[:80]))
        rows.append((first, LABELS[row[1].strip().lower()]))
    return rows


def image_ids(source):
    if os.path.isdir(source):
        names = [n for n in os.listdir(source) if is_jpeg_name(n)]
    else:
        with open_zip(source) as zf:
            names = [base for _, base in jpeg_members(zf)]
    return {n.rsplit(".", 1)[0] for n in names}


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "sha256":
        digest = hashlib.sha256()
        with open(args[0], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        print(digest.hexdigest())
    elif cmd == "csv":
        path, expect = args[0], int(args[1])
        rows = read_csv(path)
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            fail("%s names some images twice" % os.path.basename(path))
        if len(rows) != expect:
            fail("%s has %d label rows, expected %d" % (os.path.basename(path), len(rows), expect))
        mal = sum(r[1] for r in rows)
        print("%d rows (%d benign, %d malignant)" % (len(rows), len(rows) - mal, mal))
    elif cmd == "zip":
        path, expect = args[0], int(args[1])
        with open_zip(path) as zf:
            n = len(jpeg_members(zf))
        if n != expect:
            fail("%s holds %d JPEG images, expected %d" % (os.path.basename(path), n, expect))
        print("%d JPEG images" % n)
    elif cmd == "countdir":
        print(sum(1 for n in os.listdir(args[0]) if is_jpeg_name(n)))
    elif cmd == "crossids":
        images, csv_path = args[0], args[1]
        have = image_ids(images)
        want = {r[0] for r in read_csv(csv_path)}
        no_image, no_label = sorted(want - have), sorted(have - want)
        if no_image or no_label:
            msg = "%s and %s do not match:" % (os.path.basename(images), os.path.basename(csv_path))
            if no_image:
                msg += " %d labelled ids have no image (e.g. %s);" % (len(no_image), ", ".join(no_image[:3]))
            if no_label:
                msg += " %d images have no label (e.g. %s);" % (len(no_label), ", ".join(no_label[:3]))
            fail(msg.rstrip(";"))
    elif cmd == "extract":
        path, dest, expect = args[0], args[1], int(args[2])
        os.makedirs(dest, exist_ok=True)
        n = 0
        with open_zip(path) as zf:
            for info, base in jpeg_members(zf):
                try:
                    data = zf.read(info)  # checks the CRC-32
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    fail("%s is damaged: %s (%s)" % (os.path.basename(path), info.filename, exc))
                if not data.startswith(b"\xff\xd8"):
                    fail("%s: %s is not a JPEG image" % (os.path.basename(path), info.filename))
                with open(os.path.join(dest, base), "wb") as out:
                    out.write(data)
                n += 1
        if n != expect:
            fail("%s gave %d JPEG images, expected %d" % (os.path.basename(path), n, expect))
    else:
        sys.stderr.write("unknown helper command %s\n" % cmd)
        sys.exit(2)


main(sys.argv[1:])
PY

py() { "$PYTHON" -c "$PY_HELPER" "$@"; }

expect_for() {
    # expect_for FILE -> expected image / row count of the split FILE belongs to.
    case "$1" in
        *Training*) echo "$EXPECT_TRAIN" ;;
        *) echo "$EXPECT_TEST" ;;
    esac
}

expect_var_for() {
    case "$1" in
        *Training*) echo "ISIC2016_EXPECT_TRAIN" ;;
        *) echo "ISIC2016_EXPECT_TEST" ;;
    esac
}

sha_for() {
    # sha_for FILE -> expected SHA-256 (lower case) or empty when unknown / skipped.
    case "$1" in
        "$TRAIN_ZIP") echo "$SHA256_TRAIN_ZIP" | tr 'A-F' 'a-f' ;;
        "$TRAIN_CSV") echo "$SHA256_TRAIN_CSV" | tr 'A-F' 'a-f' ;;
        *) echo "" ;;
    esac
}

target_for() {
    # target_for FILE -> what the loader reads: the folder for a zip, the CSV itself otherwise.
    case "$1" in
        *.zip) echo "$ROOT/${1%.zip}" ;;
        *) echo "$ROOT/$1" ;;
    esac
}

installed_ok() {
    # installed_ok FILE: 0 when FILE's target is in place with the right count, 1 when absent.
    # A target that is there but wrong is not touched: the script stops and says what to do.
    local file="$1" target expect n msg
    target="$(target_for "$file")"
    expect="$(expect_for "$file")"
    [[ -e "$target" ]] || return 1
    if [[ "$file" == *.zip ]]; then
        [[ -d "$target" ]] || die 1 "error: $target exists but is not a folder; remove it and run this script again."
        n="$(py countdir "$target")"
        if [[ "$n" != "$expect" ]]; then
            die 1 "error: $target exists but holds $n JPEG images, expected $expect" \
                "($(expect_var_for "$file")=$expect). It was not made by a complete run of this script;" \
                "remove it (rm -rf '$target') and run this script again."
        fi
    else
        if ! msg="$(py csv "$target" "$expect" 2>&1)"; then
            die 1 "error: $target exists but fails the check: $msg" \
                "Remove it (rm '$target') and run this script again."
        fi
    fi
    return 0
}

source_for() {
    # source_for FILE -> path of a complete copy of FILE: a hand-placed ROOT/FILE (zips only; a
    # hand-placed CSV is already the target) or a finished download, or empty when there is none.
    if [[ "$1" == *.zip && -f "$ROOT/$1" ]]; then
        echo "$ROOT/$1"
    elif [[ -f "$DL/$1" ]]; then
        echo "$DL/$1"
    else
        echo ""
    fi
}

download() {
    # download FILE: fetch FILE into $DL/FILE, trying each base URL in turn and resuming a
    # leftover $DL/FILE.part. Exits with a message naming FILE and every URL tried on failure.
    local file="$1" part="$DL/$1.part" base url rc code tried=()
    local progress=(--silent --show-error)
    if [[ -t 2 ]]; then progress=(--progress-bar); fi
    for base in $BASE_URLS; do
        url="${base%/}/$file"
        if [[ -s "$part" ]]; then
            say "Resuming $file from $url ($(wc -c <"$part" | tr -d ' ') bytes already here)"
        else
            say "Downloading $file from $url"
        fi
        rc=0
        code="$(curl --fail --location --continue-at - "${progress[@]}" \
            --retry 3 --connect-timeout 20 --speed-limit 1024 --speed-time 60 \
            --write-out '%{http_code}' --output "$part" "$url")" || rc=$?
        if [[ "$rc" -ne 0 && -s "$part" && ("$rc" -eq 33 || "$code" == "416") ]]; then
            # The server ignored or refused the Range request: start this file from byte 0.
            say "The server cannot resume $file here; restarting it from the beginning."
            rm -f "$part"
            rc=0
            code="$(curl --fail --location "${progress[@]}" \
                --retry 3 --connect-timeout 20 --speed-limit 1024 --speed-time 60 \
                --write-out '%{http_code}' --output "$part" "$url")" || rc=$?
        fi
        if [[ "$rc" -eq 0 ]]; then
            mv -f "$part" "$DL/$file"
            return 0
        fi
        [[ -s "$part" ]] || rm -f "$part"
        tried+=("  $url: $(curl_reason "$rc" "$code")")
    done
    say "error: could not download $file. Tried:"
    printf '%s\n' "${tried[@]}" >&2
    offline_advice "$part"
    exit 1
}

verify_file() {
    # verify_file FILE PATH: SHA-256 (where known) and counts. A failed download is deleted; a
    # file put into ROOT by hand is left alone.
    local file="$1" path="$2" want got summary msg expect var
    want="$(sha_for "$file")"
    expect="$(expect_for "$file")"
    var="$(expect_var_for "$file")"
    local on_fail="The bad download was deleted; run this script again to fetch it anew."
    if [[ "$path" == "$ROOT/$file" ]]; then
        on_fail="It was put into $ROOT by hand and is left there: replace it or remove it."
    fi
    if [[ -n "$want" ]]; then
        got="$(py sha256 "$path")"
        if [[ "$got" != "$want" ]]; then
            [[ "$path" == "$DL/$file" ]] && rm -f "$path"
            die 1 "error: SHA-256 mismatch for $file" \
                "  expected: $want" \
                "  got:      $got" \
                "$on_fail" \
                "(If the file really changed upstream, set the matching ISIC2016_SHA256_* variable; see --help.)"
        fi
    fi
    if [[ "$file" == *.zip ]]; then
        msg="$(py zip "$path" "$expect" 2>&1)" || {
            [[ "$path" == "$DL/$file" ]] && rm -f "$path"
            die 1 "error: $msg ($var=$expect)." "$on_fail"
        }
    else
        msg="$(py csv "$path" "$expect" 2>&1)" || {
            [[ "$path" == "$DL/$file" ]] && rm -f "$path"
            die 1 "error: $msg ($var=$expect)." "$on_fail"
        }
    fi
    summary="$msg"
    say "Verified $file: $summary${want:+, SHA-256 ok}"
}

cross_check() {
    # cross_check ZIPFILE CSVFILE: the split's images and labels must name the same ids.
    local zipfile="$1" csvfile="$2" images labels msg
    images="$(source_for "$zipfile")"
    [[ -n "$images" ]] || images="$(target_for "$zipfile")"
    labels="$(source_for "$csvfile")"
    [[ -n "$labels" ]] || labels="$(target_for "$csvfile")"
    if ! msg="$(py crossids "$images" "$labels" 2>&1)"; then
        die 1 "error: $msg." \
            "Delete the download folder ($DL) and run this script again; if it persists, report it."
    fi
}

install_file() {
    # install_file FILE: put a verified FILE in place (CSV: rename; zip: extract then rename).
    local file="$1" src target expect msg
    src="$(source_for "$file")"
    target="$(target_for "$file")"
    expect="$(expect_for "$file")"
    if [[ "$file" != *.zip ]]; then
        mv -f "$src" "$target"
        return 0
    fi
    say "Unpacking $file ..."
    EXTRACT_TMP="$(mktemp -d "$DL/extract.XXXXXX")"
    if ! msg="$(py extract "$src" "$EXTRACT_TMP/${file%.zip}" "$expect" 2>&1)"; then
        rm -rf "$EXTRACT_TMP"
        EXTRACT_TMP=""
        [[ "$src" == "$DL/$file" ]] && rm -f "$src"
        die 1 "error: $msg." "The bad download was deleted (unless put there by hand); run this script again."
    fi
    mv "$EXTRACT_TMP/${file%.zip}" "$target"
    rmdir "$EXTRACT_TMP"
    EXTRACT_TMP=""
    if [[ "$src" == "$DL/$file" ]]; then
        rm -f "$src"
    else
        say "Unpacked $src; you may delete that zip now."
    fi
}

cleanup() {
    # On any exit: drop a half-extracted temporary folder and an empty download folder.
    if [[ -n "${EXTRACT_TMP:-}" && -d "$EXTRACT_TMP" ]]; then rm -rf "$EXTRACT_TMP"; fi
    if [[ -n "${DL:-}" && -d "$DL" ]]; then rmdir "$DL" 2>/dev/null || true; fi
}

# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
ROOT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            [[ $# -gt 0 ]] && ROOT="$1"
            break
            ;;
        -*)
            die 2 "error: unknown option '$1'; see: bash $SCRIPT_NAME --help"
            ;;
        *)
            [[ -z "$ROOT" ]] || die 2 "error: give at most one ROOT folder (got '$ROOT' and '$1'); see --help"
            ROOT="$1"
            ;;
    esac
    shift
done
[[ -n "$ROOT" ]] || ROOT="$SCRIPT_DIR/data/isic2016"

BASE_URLS="${ISIC2016_BASE_URLS:-$DEFAULT_BASE_URLS}"
EXPECT_TRAIN="${ISIC2016_EXPECT_TRAIN:-900}"
EXPECT_TEST="${ISIC2016_EXPECT_TEST:-379}"
SHA256_TRAIN_ZIP="${ISIC2016_SHA256_TRAIN_ZIP-$DEFAULT_SHA256_TRAIN_ZIP}"
SHA256_TRAIN_CSV="${ISIC2016_SHA256_TRAIN_CSV-$DEFAULT_SHA256_TRAIN_CSV}"
check_count_var ISIC2016_EXPECT_TRAIN "$EXPECT_TRAIN"
check_count_var ISIC2016_EXPECT_TEST "$EXPECT_TEST"
check_hash_var ISIC2016_SHA256_TRAIN_ZIP "$SHA256_TRAIN_ZIP"
check_hash_var ISIC2016_SHA256_TRAIN_CSV "$SHA256_TRAIN_CSV"
[[ -n "${BASE_URLS// /}" ]] || die 2 "error: ISIC2016_BASE_URLS is blank; give at least one base URL or unset it"

command -v curl >/dev/null 2>&1 || die 2 "error: curl is not installed. Install it (Debian/Ubuntu: sudo apt-get install curl;" \
    "macOS: it ships with the system, or brew install curl; conda: conda install curl) and run this script again."
PYTHON="$(pick_python)" || die 2 "error: Python 3 is needed (as python3 or python) for unpacking and checking;" \
    "install it (Debian/Ubuntu: sudo apt-get install python3) or activate the course's virtual environment."

mkdir -p "$ROOT" || die 2 "error: cannot create the data folder $ROOT"
ROOT="$(cd "$ROOT" && pwd)"
DL="$ROOT/.download"
EXTRACT_TMP=""
trap cleanup EXIT

# Which files still need work? (Also stops on a target that is there but wrong.)
needed=()
for file in "${FILES[@]}"; do
    installed_ok "$file" || needed+=("$file")
done
if [[ ${#needed[@]} -eq 0 ]]; then
    say "ISIC 2016 Part 3 is already present and verified in $ROOT" \
        "($EXPECT_TRAIN training and $EXPECT_TEST test images with labels); nothing to do."
    exit 0
fi

mkdir -p "$DL"
rm -rf "$DL"/extract.* # left by a run that was killed while unpacking

# 1. Fetch (or find) and verify every missing file, one at a time: stop at the first failure.
for file in "${needed[@]}"; do
    src="$(source_for "$file")"
    if [[ -n "$src" ]]; then
        say "Found $src; not downloading it again."
    else
        download "$file"
        src="$DL/$file"
    fi
    verify_file "$file" "$src"
done

# 2. Images and labels of each split must name the same ids.
for pair in "$TRAIN_ZIP $TRAIN_CSV" "$TEST_ZIP $TEST_CSV"; do
    read -r zipfile csvfile <<<"$pair"
    for file in "${needed[@]}"; do
        if [[ "$file" == "$zipfile" || "$file" == "$csvfile" ]]; then
            cross_check "$zipfile" "$csvfile"
            break
        fi
    done
done

# 3. Put everything in place; a zip is unpacked beside and renamed into place when complete.
for file in "${needed[@]}"; do
    install_file "$file"
done

say "Done: ISIC 2016 Part 3 is in $ROOT ($EXPECT_TRAIN training and $EXPECT_TEST test images with labels)."
say "Data: CC-0, ISIC. Cite Gutman et al. 2016, arXiv:1605.01397."
