#!/bin/sh
# Differential test: ref/diff.sh <request-file>... ; prints the files whose variables differ.
# Empty values and "0" are dropped on both sides (libmodsecurity leaves many variables unset).
V='ARGS|ARGS_GET|ARGS_POST|REQUEST_COOKIES|REQUEST_HEADERS|FILES|MULTIPART_PART_HEADERS|XML:/*|REQUEST_URI|REQUEST_URI_RAW|REQUEST_FILENAME|REQUEST_BASENAME|REQUEST_LINE|QUERY_STRING|REQUEST_PROTOCOL|REQUEST_METHOD|REQBODY_ERROR_MSG|REQBODY_ERROR|URLENCODED_ERROR|MULTIPART_STRICT_ERROR|MULTIPART_UNMATCHED_BOUNDARY|MULTIPART_DATA_BEFORE|MULTIPART_DATA_AFTER|MULTIPART_HEADER_FOLDING|MULTIPART_LF_LINE|MULTIPART_CRLF_LF_LINES|MULTIPART_MISSING_SEMICOLON|MULTIPART_INVALID_QUOTING|MULTIPART_INVALID_PART|MULTIPART_INVALID_HEADER_FOLDING|MULTIPART_BOUNDARY_QUOTED|MULTIPART_BOUNDARY_WHITESPACE|REQBODY_PROCESSOR|FILES_COMBINED_SIZE|REQUEST_BODY|REQUEST_BODY_LENGTH'
D=$(dirname "$0")
for f in "$@"; do
  "$D/harness" "$V" "$D/json.conf" < "$f" | tail -n +2 | grep -v -e '~>$' -e '~>0$' | sort > /tmp/diff.ref.$$
  "$D/../target/debug/examples/dump" < "$f" | grep -v -e '~>$' -e '~>0$' | sort > /tmp/diff.our.$$
  if ! cmp -s /tmp/diff.ref.$$ /tmp/diff.our.$$; then
    echo "### $f"; diff /tmp/diff.ref.$$ /tmp/diff.our.$$
  fi
done
rm -f /tmp/diff.ref.$$ /tmp/diff.our.$$
