#!/bin/bash
# Prints a maintainer script or install.sh with packaging/lib.sh in place of
# its "#LIB#" line and VERSION in place of "#VERSION#".
# Usage: packaging/expand.sh FILE VERSION
set -euo pipefail
lib="$(dirname "$0")/lib.sh"
awk -v lib="$lib" -v version="$2" '
  $0 == "#LIB#" { while ((getline line < lib) > 0) print line; next }
  { gsub(/#VERSION#/, version); print }
' "$1"
