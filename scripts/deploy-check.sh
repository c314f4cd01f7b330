#!/usr/bin/env bash
# `make deploy-check`: run the deployment files in deploy/ as far as this machine allows.
#
#  * pm2: deploy/ecosystem.config.js is started under pm2 from npm (pinned, installed into a cache
#    outside the repo, with PM2_HOME in a temporary folder: a user's own pm2 is never touched)
#    against a one-validator devnet made in a temporary folder; the node must decide blocks, stop
#    on `pm2 stop` with pm2's default signal, exit 0 and be gone; then pm2 delete and pm2 kill.
#  * systemd: `systemd-analyze verify` on deploy/validator-node.service (Debian's systemd package,
#    installed with apt if missing and we are root). Not run under a real systemd (PID 1).
#
# One PASS/FAIL line per check; exits 1 if any failed. DEPLOY_CHECK_KEEP=1 keeps the temporary
# folder (devnet, pm2 home and logs) for a look afterwards. PM2_KILL_SIGNAL=SIGTERM makes pm2
# stop the node with SIGTERM instead of its default SIGINT (the check then expects the SIGTERM line).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
PM2_VERSION=7.0.4
PM2_PREFIX=${PM2_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/platform-validator/pm2}
PM2=$PM2_PREFIX/node_modules/.bin/pm2
APP=validator-node # the name deploy/ecosystem.config.js gives the process
MIN_HEIGHT=3
TIMEOUT=${DEPLOY_CHECK_TIMEOUT:-120} # seconds for the node to reach MIN_HEIGHT

WORK=$(mktemp -d "${TMPDIR:-/tmp}/deploy-check.XXXXXX")
export PM2_HOME=$WORK/pm2-home
# no calls home from pm2: the daemon's version check, and the client's first-run "install" ping
# and banner (skipped when PM2_HOME/touch exists)
export PM2_DISABLE_VERSION_CHECK=1
mkdir -p "$PM2_HOME" && date +%s000 >"$PM2_HOME/touch"
# the devnet's settings come from the env file only, never from the caller's environment
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^VALIDATOR_NODE_' || true)

failures=0
pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  failures=$((failures + 1))
}
show() { # the tail of a log file, indented, after a failure
  [ -f "$1" ] && tail -n "${2:-20}" "$1" | sed 's/^/      | /'
}

cleanup() {
  if [ -x "$PM2" ] && [ -e "$PM2_HOME/pm2.pid" ]; then "$PM2" kill >/dev/null 2>&1; fi
  if [ "${DEPLOY_CHECK_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root_apt() { # apt-get install "$@" when root; false otherwise
  [ "$(id -u)" = 0 ] || return 1
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ---- pm2 -----------------------------------------------------------------------------------------
check_pm2() {
  if ! command -v npm >/dev/null 2>&1; then
    as_root_apt nodejs npm >"$WORK/apt.log" 2>&1 || {
      fail "pm2: npm is missing (apt-get install nodejs npm as root)"
      return
    }
  fi
  local have=""
  [ -f "$PM2_PREFIX/node_modules/pm2/package.json" ] &&
    have=$(node -p "require('$PM2_PREFIX/node_modules/pm2/package.json').version" 2>/dev/null)
  if [ "$have" != "$PM2_VERSION" ]; then
    if ! npm install --prefix "$PM2_PREFIX" --no-audit --no-fund --save-exact "pm2@$PM2_VERSION" \
      >"$WORK/npm.log" 2>&1; then
      fail "pm2 $PM2_VERSION: npm install --prefix $PM2_PREFIX failed"
      show "$WORK/npm.log"
      return
    fi
  fi
  have=$(node -p "require('$PM2_PREFIX/node_modules/pm2/package.json').version")
  if [ "$have" != "$PM2_VERSION" ] || ! "$PM2" --version >/dev/null 2>&1; then
    fail "pm2: $PM2 is not version $PM2_VERSION (found '$have')"
    return
  fi
  pass "pm2 $PM2_VERSION from npm in $PM2_PREFIX (PM2_HOME $PM2_HOME)"

  # the devnet: one validator decides blocks alone; its settings go into an env file like
  # deploy/validator-node.env.example, which deploy/ecosystem.config.js reads
  local net=$WORK/devnet status
  if ! status=$(
    "$PY" - "$net" 2>"$WORK/devnet.log" <<'PY'
import sys
from pathlib import Path

from validator_node.devnet.cluster import NETUID, create, genesis_record

root = Path(sys.argv[1])
(v,), _ = create(root, 1, miners=0)
record, digest = genesis_record(root, 12)
env = {
    "NETUID": NETUID,
    "SUBTENSOR_NETWORK": "local",
    "CHAIN_PATH": root / "chain.sqlite",
    "CHAIN_GENESIS": root / "genesis.json",
    "WALLET_NAME": v.wallet_name,
    "WALLET_HOTKEY": "default",
    "WALLET_PATH": root / "wallets",
    "DATA_DIR": root / "data",
    "P2P_PORT": v.port,
    "BLOCK_INTERVAL": 0.5,
    "EPOCH_BLOCKS": 12,
    "GENESIS": record,
    "GENESIS_HASH": digest,
}
(root / "validator-node.env").write_text("".join(f"VALIDATOR_NODE_{k}={x}\n" for k, x in env.items()))
print(root / "data" / str(NETUID) / v.ss58 / "status.json")
PY
  ); then
    fail "devnet: could not create a one-validator devnet in $net"
    show "$WORK/devnet.log"
    return
  fi
  pass "devnet: one validator, settings in $net/validator-node.env"

  # the signal `pm2 stop` sends: pm2's KILL_SIGNAL (PM2_KILL_SIGNAL, unset here, else SIGINT)
  local sig
  sig=$(node -p "require('$PM2_PREFIX/node_modules/pm2/constants.js').KILL_SIGNAL")
  local expect # what the node logs when it stops on that signal (validator_node/node.py)
  case $sig in
    SIGINT) expect='SIGINT: stopping' ;;
    SIGTERM) expect='SIGTERM: stopping' ;;
    *)
      fail "pm2 sends $sig on stop, which the node does not handle"
      return
      ;;
  esac

  export VALIDATOR_NODE_ENV_FILE=$net/validator-node.env VALIDATOR_NODE_BIN=$VENV/bin/validator-node \
    VALIDATOR_NODE_CWD=$net
  if ! (cd "$ROOT" && "$PM2" start deploy/ecosystem.config.js) >"$WORK/pm2-start.log" 2>&1; then
    fail "pm2 start deploy/ecosystem.config.js"
    show "$WORK/pm2-start.log"
    return
  fi
  local jlist=$WORK/jlist.json info pid state errlog exe kill_timeout
  "$PM2" jlist >"$jlist" 2>/dev/null
  info=$("$PY" - "$jlist" "$APP" <<'PY'
import json, sys
apps = [a for a in json.load(open(sys.argv[1])) if a["name"] == sys.argv[2]]
if apps:
    e = apps[0]["pm2_env"]
    print(apps[0]["pid"], e["status"], e["pm_err_log_path"], e["pm_exec_path"], e.get("kill_timeout"))
PY
  )
  read -r pid state errlog exe kill_timeout <<<"$info"
  if [ "${state:-}" != online ] || [ "${pid:-0}" = 0 ]; then
    fail "pm2 start deploy/ecosystem.config.js: $APP is '${state:-absent}', not online"
    show "$WORK/pm2-start.log"
    return
  fi
  pass "pm2 start deploy/ecosystem.config.js: $APP online, pid $pid, $exe, kill_timeout $kill_timeout ms"

  local t0=$SECONDS height=0
  while :; do
    height=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("height", 0))' \
      "$status" 2>/dev/null || echo 0)
    [ "$height" -ge "$MIN_HEIGHT" ] && break
    if ! kill -0 "$pid" 2>/dev/null || [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then break; fi
    sleep 1
  done
  if [ "$height" -ge "$MIN_HEIGHT" ]; then
    pass "validator decided height $height (status.json) $((SECONDS - t0)) s after pm2 start"
  else
    fail "validator at height $height after $((SECONDS - t0)) s (wanted $MIN_HEIGHT; pid $pid alive: $(kill -0 "$pid" 2>/dev/null && echo yes || echo no))"
    show "$errlog" 30
  fi

  local t1=$SECONDS
  if ! "$PM2" stop "$APP" >"$WORK/pm2-stop.log" 2>&1; then
    fail "pm2 stop $APP"
    show "$WORK/pm2-stop.log"
  fi
  local took=$((SECONDS - t1)) line
  # pm2's own record of the exit (its wording names SIGINT whatever the signal: the code matters)
  line=$(grep -a "App \[$APP:[0-9]*\] exited with code" "$PM2_HOME/pm2.log" | tail -n 1)
  if kill -0 "$pid" 2>/dev/null; then
    fail "pm2 stop: pid $pid still running"
  elif [[ $line == *"exited with code [0]"* ]]; then
    pass "pm2 stop: pid $pid exited with code 0 after ${took} s (pm2.log: ${line#*PM2 log: })"
  else
    fail "pm2 stop: pid $pid did not exit 0 (pm2.log: '${line:-nothing}')"
    show "$PM2_HOME/pm2.log"
  fi
  local stopped
  stopped=$(grep -aE "$expect" "$errlog" | tail -n 1)
  if [ -n "$stopped" ] && ! grep -aq Traceback "$errlog"; then
    pass "node stopped on $sig (pm2's stop signal; PM2_KILL_SIGNAL ${PM2_KILL_SIGNAL:-unset}), log: $stopped"
  else
    fail "node log has no clean stop on $sig (wanted /$expect/, no Traceback)"
    show "$errlog" 30
  fi
  local restarts
  restarts=$("$PM2" jlist 2>/dev/null | "$PY" -c '
import json, sys
print(sum(a["pm2_env"]["restart_time"] for a in json.load(sys.stdin) if a["name"] == sys.argv[1]))' "$APP")
  if [ "$restarts" = 0 ]; then
    pass "pm2: $APP was never restarted"
  else
    fail "pm2: $APP was restarted $restarts times (it crashed)"
    show "$errlog" 30
  fi

  if "$PM2" delete "$APP" >"$WORK/pm2-delete.log" 2>&1 && "$PM2" kill >"$WORK/pm2-kill.log" 2>&1 &&
    ! [ -e "$PM2_HOME/pm2.pid" ]; then
    pass "pm2 delete $APP; pm2 kill: daemon gone"
  else
    fail "pm2 delete / pm2 kill"
    show "$WORK/pm2-kill.log"
  fi
}

# ---- systemd -------------------------------------------------------------------------------------
check_systemd() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    as_root_apt systemd >"$WORK/apt.log" 2>&1 || {
      fail "systemd-analyze is missing (apt-get install systemd as root)"
      return
    }
  fi
  # `systemd-analyze verify` fails on an ExecStart= binary that does not exist ("Command ... is
  # not executable"), so it reads a copy of the unit whose production paths (/srv/platform,
  # /etc/validator-node/validator-node.env) point at this checkout, its venv and the devnet's env
  # file; every other line is the file as shipped. User=validator is kept: verify does not look
  # users up. The copy keeps the name validator-node.service (verify wants a unit name).
  local unit=$WORK/systemd/validator-node.service env=$WORK/devnet/validator-node.env out
  mkdir -p "$WORK/systemd"
  [ -f "$env" ] || env=$ROOT/deploy/validator-node.env.example
  sed -e "s|^ExecStart=/srv/platform/.venv/bin/validator-node |ExecStart=$VENV/bin/validator-node |" \
    -e "s|^WorkingDirectory=/srv/platform\$|WorkingDirectory=$ROOT|" \
    -e "s|^EnvironmentFile=/etc/validator-node/validator-node.env\$|EnvironmentFile=$env|" \
    "$ROOT/deploy/validator-node.service" >"$unit"
  if diff -q "$ROOT/deploy/validator-node.service" "$unit" >/dev/null ||
    [ "$(diff "$ROOT/deploy/validator-node.service" "$unit" | grep -c '^>')" != 3 ]; then
    fail "systemd: the unit's ExecStart/WorkingDirectory/EnvironmentFile lines were not all substituted"
    return
  fi
  if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify deploy/validator-node.service ($(systemd-analyze --version | head -n 1)): no findings"
  else
    fail "systemd-analyze verify deploy/validator-node.service:"
    printf '%s\n' "$out" | sed 's/^/      | /'
  fi
}

started=$SECONDS
check_pm2
check_systemd
echo "deploy-check: $failures failed, $((SECONDS - started)) s"
[ "$failures" = 0 ]
