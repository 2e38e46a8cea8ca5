# Shared by run.sh, instructions.sh and syscalls.sh (sourced once ROOT is set): a work directory
# removed on exit together with the server under test ($SPID), the HMAC secret every wsguard
# config reads, and render_config, which writes the benchmark configuration for a port.
WORK="$(mktemp -d)"
SPID=""
HELPER_PIDS=() # background helpers of a run (the KEYS=idp key server), stopped at exit
cleanup() {
  if [[ -n "$SPID" ]]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  local pid
  for pid in "${HELPER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

WSGUARD_HMAC_SECRET="$(head -c 48 /dev/urandom | base64 -w0)"
export WSGUARD_HMAC_SECRET
# The [auth] key source is the template's HMAC secret unless KEY_SOURCE holds TOML lines to put in
# place of its `hmac_secret_env` line. With a second argument `before` (the config of WSG_BEFORE's
# older binary): KEY_SOURCE_BEFORE instead of KEY_SOURCE when set, and lines matching the regex
# WSG_BEFORE_DROP (keys the older binary does not know) left out. With `history` (the
# `wsguard-history` server): the keys of bench/config/history.toml in each channel rule, at the
# template's @HISTORY@ lines (removed otherwise).
render_config() { # port [before|history] -> config path
  local out="$WORK/wsguard-$1${2:+-$2}.toml"
  local keys=${KEY_SOURCE:-} drop="" history=""
  if [[ ${2:-} == before ]]; then keys=${KEY_SOURCE_BEFORE:-$keys}; drop=${WSG_BEFORE_DROP:-}; fi
  if [[ ${2:-} == history ]]; then history="$(grep -v '^#' "$ROOT/bench/config/history.toml")"; fi
  sed -e "s|@PORT@|$1|" -e "s|@SCHEMA@|$ROOT/bench/config/payload.schema.json|" \
    "$ROOT/bench/config/wsguard.toml.in" |
    KEYS="$keys" DROP="$drop" HISTORY="$history" awk '
      ENVIRON["DROP"] != "" && $0 ~ ENVIRON["DROP"] { next }
      /^@HISTORY@$/ { if (ENVIRON["HISTORY"] != "") print ENVIRON["HISTORY"]; next }
      ENVIRON["KEYS"] != "" && /^hmac_secret_env/ { print ENVIRON["KEYS"]; next }
      { print }' >"$out"
  echo "$out"
}
