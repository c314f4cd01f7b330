// pm2 process file for one validator: `validator-node run`, configured by an environment file.
//
//   VALIDATOR_NODE_ENV_FILE=/etc/validator-node/validator-node.env pm2 start deploy/ecosystem.config.js
//   pm2 logs validator-node
//
// Settings, all optional (the defaults are the production paths of validator-node.service):
//   VALIDATOR_NODE_ENV_FILE  KEY=VALUE file, the same one systemd reads (validator-node.env.example);
//                            default /etc/validator-node/validator-node.env (skipped if missing;
//                            an explicitly named file must exist)
//   VALIDATOR_NODE_BIN       the venv's validator-node (default /srv/platform/.venv/bin/validator-node)
//   VALIDATOR_NODE_CWD       working directory (default /srv/platform)
//   VALIDATOR_NODE_PM2_NAME  pm2 process name (default validator-node)
// These four are read from the shell that runs `pm2 start`; the node's own VALIDATOR_NODE_*
// settings come from the file, and those also set in that shell win over the file's.
//
// Stopping: pm2 sends SIGINT (its default; set PM2_KILL_SIGNAL=SIGTERM in the environment that
// starts the pm2 daemon to change it, for every app of that daemon), then SIGKILL after
// kill_timeout. The node takes SIGINT and SIGTERM alike: it lets weights being submitted reach the
// chain (up to 15 s), then exits 0 (`make deploy-check` checks this).
'use strict';
const fs = require('fs');

function readEnvFile(path, required) {
  const env = {};
  let text;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT' && !required) return env;
    throw err;
  }
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${path}: not KEY=VALUE: ${line}`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return env;
}

const own = ['VALIDATOR_NODE_ENV_FILE', 'VALIDATOR_NODE_BIN', 'VALIDATOR_NODE_CWD', 'VALIDATOR_NODE_PM2_NAME'];
const envFile = process.env.VALIDATOR_NODE_ENV_FILE || '/etc/validator-node/validator-node.env';
const fromShell = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => k.startsWith('VALIDATOR_NODE_') && !own.includes(k)),
);
const env = { ...readEnvFile(envFile, 'VALIDATOR_NODE_ENV_FILE' in process.env), ...fromShell }; // the node's VALIDATOR_NODE_* settings
const setting = (name, fallback) => process.env[name] || fallback;

module.exports = {
  apps: [
    {
      name: setting('VALIDATOR_NODE_PM2_NAME', 'validator-node'),
      script: setting('VALIDATOR_NODE_BIN', '/srv/platform/.venv/bin/validator-node'),
      args: ['run', '--logging.json'],
      interpreter: 'none', // a Python console script: run it as is, not under node
      exec_mode: 'fork',
      instances: 1,
      cwd: setting('VALIDATOR_NODE_CWD', '/srv/platform'),
      env,
      kill_timeout: 30000, // ms between SIGINT and SIGKILL (pm2's default, 1.6 s, is too short)
      // like Restart=on-failure: restarted 5 s after an exit pm2 did not ask for, except exit 0
      // (a SIGTERM stop, --stop-at-height); pm2 gives up after 10 exits within 10 s of a start
      autorestart: true,
      stop_exit_codes: [0],
      restart_delay: 5000,
      max_restarts: 10,
      min_uptime: 10000,
    },
  ],
};
