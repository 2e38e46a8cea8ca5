# Shared by run.sh, instructions.sh and syscalls.sh (sourced once ROOT is set): a work directory
# removed on exit together with the server under test ($SPID), the HMAC secret every wsguard
# config reads, and render_config, which writes the benchmark configuration for a port.
WORK="$(mktemp -d)"
SPID=""
cleanup() {
  if [[ -n "$SPID" ]]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

WSGUARD_HMAC_SECRET="$(head -c 48 /dev/urandom | base64 -w0)"
export WSGUARD_HMAC_SECRET
render_config() { # port -> config path
  sed -e "s|@PORT@|$1|" -e "s|@SCHEMA@|$ROOT/bench/config/payload.schema.json|" \
    "$ROOT/bench/config/wsguard.toml.in" >"$WORK/wsguard-$1.toml"
  echo "$WORK/wsguard-$1.toml"
}
