#!/usr/bin/env bash
# One CLI convention for every strongroom tool (code health issue), driven
# command by command: `TOOL CMD --help` prints usage on stdout and exits 0;
# an option no command has is a usage error (2) on stderr, prefixed
# "TOOL:"; a missing file or configuration is "could not" (3); a success
# is 0; `TOOL --help` and `TOOL --version` exit 0; database and key paths
# with URI syntax in their names stay paths.
# usage: cli_convention.sh BUILD_DIR
set -uo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() { # want-status description command...
  local want=$1 what=$2
  shift 2
  "$@" > "$work/out" 2> "$work/err"
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, want $want: $* ($(head -c 200 "$work/err"))"
    fails=$((fails + 1))
    return 1
  fi
}
expect_usage_on_stdout() { # tool args...
  local tool=$1
  shift
  check 0 "$(basename "$tool") $* --help" "$tool" "$@" --help || return
  if ! head -1 "$work/out" | grep -q '^usage:' || [ -s "$work/err" ]; then
    echo "FAIL: $(basename "$tool") $* --help: usage not on stdout alone"; fails=$((fails + 1))
  fi
}
expect_bad_option() { # tool args...
  local tool=$1 name
  name=$(basename "$tool")
  shift
  check 2 "$name $* --no-such-option" "$tool" "$@" --no-such-option || return
  if ! grep -q "^$name: " "$work/err"; then
    echo "FAIL: $name $* --no-such-option: the error does not start with '$name: '"; fails=$((fails + 1))
  fi
}

tdectl=$build/tde/tdectl audit=$build/audit/tde-audit kmsctl=$build/kms_server/kmsctl
acl=$build/access_ctl/tde-acl agent=$build/agent/tde-agent
for t in "$tdectl" "$audit" "$kmsctl" "$acl" "$agent"; do
  check 0 "$(basename "$t") --help" "$t" --help
  check 0 "$(basename "$t") --version" "$t" --version
  check 2 "$(basename "$t") with no command" "$t"
done
for c in keygen create status verify encrypt decrypt rekey rotate-master backup restore; do
  expect_usage_on_stdout "$tdectl" $c; expect_bad_option "$tdectl" $c
done
for c in keygen verify search report append serve collect register forward events; do
  expect_usage_on_stdout "$audit" $c; expect_bad_option "$audit" $c
done
for c in init status "key create" "key list" "cert issue" "token create" "node list" "store backup" "policy push"; do
  expect_usage_on_stdout "$kmsctl" $c; expect_bad_option "$kmsctl" $c
done
for c in check lint explain install; do
  expect_usage_on_stdout "$acl" $c; expect_bad_option "$acl" $c
done
for c in run status; do
  expect_usage_on_stdout "$agent" $c; expect_bad_option "$agent" $c
done

# could not check: a missing file or configuration is 3, never 1
check 0 "tdectl keygen" "$tdectl" keygen "$work/k"
check 3 "tdectl verify of a missing database" "$tdectl" verify --keyfile "$work/k" "$work/missing.db"
check 4 "tdectl verify with a missing key file" "$tdectl" verify --keyfile "$work/missing.key" "$work/missing.db"
check 3 "tde-audit verify of a missing log" "$audit" verify "$work/missing.log"
check 3 "kmsctl with a missing configuration" "$kmsctl" --config "$work/missing.conf" status
check 3 "tde-acl check with a missing policy" "$acl" check --policy "$work/missing.acl" --user u
check 3 "tde-agent status with a missing configuration" "$agent" status --config "$work/missing.conf"
# successes
printf 'allow * alice 127.0.0.1 * # alice from here\ndeny * * * *\n' > "$work/policy.acl"
check 0 "tde-acl lint of a good policy" "$acl" lint "$work/policy.acl"
check 0 "tde-acl check allowed" "$acl" check --policy "$work/policy.acl" --user alice --from 127.0.0.1
check 1 "tde-acl check refused (a check that fails: 1)" "$acl" check --policy "$work/policy.acl" --user bob --from 127.0.0.1
check 0 "tde-audit events" "$audit" events
check 0 "tdectl create" "$tdectl" create --keyfile "$work/k" "$work/a.db"
check 0 "tdectl status --json" "$tdectl" status --json "$work/a.db"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$work/out" || { echo "FAIL: tdectl status --json is not JSON"; fails=$((fails + 1)); }
# paths are paths: '#', '?', '%', '&', spaces and non-ASCII in database and
# key-file names (SQLite URIs would read them as syntax unless escaped)
key="$work/key #?%&é.key" db="$work/a#b ?c%2E&d é.db"
check 0 "tdectl keygen (odd key path)" "$tdectl" keygen "$key"
check 0 "tdectl create (odd paths)" "$tdectl" create --keyfile "$key" "$db"
check 0 "tdectl verify (odd paths)" "$tdectl" verify --keyfile "$key" "$db"
check 0 "tdectl status (odd paths)" "$tdectl" status --keyfile "$key" "$db"
sqlite3 "$work/plain.db" "CREATE TABLE t(x); INSERT INTO t VALUES ('PLAIN-MARKER');"
check 0 "tdectl encrypt to 'out.db?plaintext=1&'" "$tdectl" encrypt --keyfile "$key" "$work/plain.db" "$work/out.db?plaintext=1&"
if [ ! -f "$work/out.db?plaintext=1&" ] || grep -q PLAIN-MARKER "$work/out.db?plaintext=1&"; then
  echo "FAIL: encrypt to 'out.db?plaintext=1&' did not write an encrypted file of that name"; fails=$((fails + 1))
fi
check 0 "tdectl verify 'out.db?plaintext=1&'" "$tdectl" verify --keyfile "$key" "$work/out.db?plaintext=1&"
cp "$work/plain.db" "$work/victim.db"
check 0 "tdectl encrypt to 'victim%2Edb'" "$tdectl" encrypt --keyfile "$key" "$work/plain.db" "$work/victim%2Edb"
if ! cmp -s "$work/plain.db" "$work/victim.db" || [ ! -f "$work/victim%2Edb" ]; then
  echo "FAIL: 'victim%2Edb' was read as victim.db"; fails=$((fails + 1))
fi
check 3 "tdectl encrypt over an existing file" "$tdectl" encrypt --keyfile "$key" "$work/plain.db" "$work/victim%2Edb"

[ $fails = 0 ] && echo "ok: every tool and command follows the CLI convention"
exit $((fails > 0))
