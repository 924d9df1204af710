#!/usr/bin/env bash
# The public API is what we decide, nothing more (code health issue):
#   - libstrongroom.so exports exactly the functions the installed headers
#     declare with SR_API (a symbol added without SR_API, or SR_API on a
#     function that is not built, fails here, naming it);
#   - strongroom.so (the SQLite extension) exports only its entry point, and
#     registers no "strongroom-passthrough" VFS (that is strongroom-bench.so);
#   - pam_strongroom.so exports only pam_sm_*;
#   - each public header compiles on its own, and tde.h does not drag in the
#     KMIP codec.
# usage: exported_symbols.sh SOURCE_DIR CC LIBSTRONGROOM EXTENSION [PAM_MODULE]
set -euo pipefail
src=$1 cc=$2 lib=$3 ext=$4 pam=${5:-}
headers=(common/common.h common/sr_api.h common/sr_error.h common/sr_log.h common/sr_config.h common/sr_secmem.h
         common/sr_uuid.h common/sr_time.h common/sr_event.h common/sr_tls.h common/sr_file.h common/sr_bytes.h
         keymgr/keymgr.h keymgr/kmip.h tde/tde.h audit/audit.h)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
exported() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u; }

for h in "${headers[@]}"; do
  grep -ho '^SR_API [^(]*(' "$src/$h" | grep -o '[A-Za-z_][A-Za-z0-9_]*($' | tr -d '(' || true
done | sort -u > "$work/declared"
exported "$lib" > "$work/exported"
if ! diff -u "$work/declared" "$work/exported" > "$work/diff"; then
  echo "libstrongroom.so exports differ from the SR_API declarations (- declared only, + exported only):"
  grep '^[-+][a-z]' "$work/diff"
  status=1
fi
echo "libstrongroom.so: $(wc -l < "$work/exported") symbols exported, $(wc -l < "$work/declared") declared SR_API"

if [ "$(exported "$ext")" != "sqlite3_strongroom_init" ]; then
  echo "strongroom.so exports more than its entry point:"; exported "$ext"; status=1
fi
if command -v sqlite3 > /dev/null; then
  out=$(printf '.load %s\n.open file:%s/p.db?vfs=strongroom-passthrough\n' "$ext" "$work" | sqlite3 2>&1 || true)
  case $out in
    *"no such vfs: strongroom-passthrough"*) ;;
    *) echo "strongroom.so registers strongroom-passthrough (a VFS named strongroom that encrypts nothing): $out"
       status=1 ;;
  esac
fi
if [ -n "$pam" ] && [ -f "$pam" ]; then
  other=$(exported "$pam" | grep -v '^pam_sm_' || true)
  if [ -n "$other" ]; then echo "pam_strongroom.so exports more than pam_sm_*: $other"; status=1; fi
fi

includes=(-I"$src/common" -I"$src/keymgr" -I"$src/tde" -I"$src/audit")
for h in "${headers[@]}"; do
  printf '#include "%s"\n' "$(basename "$h")" > "$work/one.c"
  if ! "$cc" -std=c11 -Wall -Werror -fsyntax-only "${includes[@]}" "$work/one.c" 2> "$work/err"; then
    echo "$h does not compile on its own:"; cat "$work/err"; status=1
  fi
done
printf '#include "tde.h"\n#ifdef SR_KMIP_TAG_X_CSR\n#error tde.h includes the KMIP codec\n#endif\n' > "$work/tde.c"
if ! "$cc" -std=c11 -fsyntax-only "${includes[@]}" "$work/tde.c" 2> "$work/err"; then cat "$work/err"; status=1; fi
[ $status = 0 ] && echo "ok: the exported API is the declared one"
exit $status
