#!/usr/bin/env node
// A minimal Muster agent on another gRPC stack (pure-JS @grpc/grpc-js), written from
// proto/muster/v1/agent.proto and docs/wire.md alone. It is documentation for third-party
// implementers and the client of tests/thirdparty/run_node_agent_test.sh, not a replacement
// for muster-agent: it keeps no state on disk (no outbox, no saved credential, no reconnect),
// so it enrolls once, runs what it is sent, and exits 0 after N results were acknowledged.
//
//   node agent.js --server HOST:PORT --ca CA.crt --token 'mst_enroll_<secret>.<pin>' --id ID
//                 [--proto agent.proto] [--exit-after N]
// Each flag may come from the environment instead: MUSTER_SERVER, MUSTER_CA,
// MUSTER_ENROLL_TOKEN, MUSTER_AGENT_ID, MUSTER_PROTO, MUSTER_EXIT_AFTER.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const flag = (name, env, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i > 0 ? process.argv[i + 1] : process.env[env];
  if (value === undefined && fallback === undefined) fail(2, `missing --${name} (or ${env})`);
  return value ?? fallback;
};
function fail(code, message) {
  console.error(`node-agent: ${message}`);
  process.exit(code);
}
const log = (message) => console.error(`node-agent: ${message}`);

const server = flag('server', 'MUSTER_SERVER');
const caFile = flag('ca', 'MUSTER_CA');
const token = flag('token', 'MUSTER_ENROLL_TOKEN').trim();
const agentId = flag('id', 'MUSTER_AGENT_ID');
const protoFile = flag('proto', 'MUSTER_PROTO',
  path.join(__dirname, '../../../proto/muster/v1/agent.proto'));
const exitAfter = Number(flag('exit-after', 'MUSTER_EXIT_AFTER', '1'));

// 1. The pin. `muster token create --enroll` prints mst_enroll_<secret>.<pin>, the pin being
// the lower-case hex SHA-256 of musterd's CA certificate in DER. Trust the CA file only if it
// is the pinned CA; refuse before dialing anything otherwise.
const parsed = /^(mst_enroll_[A-Za-z0-9_-]+)\.([0-9a-fA-F]{64})$/.exec(token);
if (!parsed) fail(2, 'the enrollment token must be mst_enroll_<secret>.<64 hex digits>');
const [, secret, pin] = parsed;
const caPem = fs.readFileSync(caFile);
const caSha256 = crypto.createHash('sha256').update(new crypto.X509Certificate(caPem).raw)
  .digest('hex');
if (caSha256 !== pin.toLowerCase()) {
  fail(3, `refusing ${caFile}: its SHA-256 is ${caSha256}, the token pins ${pin.toLowerCase()}`);
}

// 2. The stub. keepCase keeps the proto's snake_case names; `oneofs` sets `msg.kind` to the
// name of the oneof member present; int64/uint64 arrive as strings (longs: String).
const proto = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile,
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }));
// Verified TLS against the CA alone; grpc-js (Node's tls) also checks the server certificate's
// names (DNS or IP SANs) against the host in `server`. Dialing an IP address makes Node warn
// (DEP0123: grpc-js sends it as the TLS server name); the check itself is done all the same.
const client = new proto.muster.v1.AgentLink(server, grpc.credentials.createSsl(caPem),
  { 'grpc.http2.bdp_probe': 0 });  // docs/wire.md: the link carries small messages

const facts = { os: os.type(), arch: os.arch(), kernel: os.release(), hostname: os.hostname(),
  agent_version: 'node-example/0.1',
  grpc_stack: `grpc-js/${require('@grpc/grpc-js/package.json').version}` };

// 3. Enroll (unary): send the secret, the part before the '.' (what muster-agent sends; the
// whole token is accepted too). attempt_id lets a retry after a lost reply get in again.
const enroll = { token: secret, agent_id: agentId, facts, labels: { impl: 'node' },
  attempt_id: crypto.randomBytes(16).toString('hex') };
// waitForReady: wait (until the deadline) for the channel to connect instead of failing fast.
client.Enroll(enroll, { deadline: Date.now() + 15000, waitForReady: true }, (err, reply) => {
  if (err) fail(1, `Enroll failed: ${grpc.status[err.code]}: ${err.details}`);
  log(`enrolled as ${reply.agent_id}`);
  connect(reply.credential);  // a real agent saves it (mode 0600) before anything else
});

// 4. Connect (bidirectional stream), authenticated by metadata; the first message is Hello.
function connect(credential) {
  const md = new grpc.Metadata();
  md.set('x-muster-agent-id', agentId);
  md.set('authorization', `Bearer ${credential}`);
  const call = client.Connect(md);
  const running = new Map();  // command_id -> child process
  let acked = 0, heartbeat = null, closing = false;
  const send = (msg) => call.write(msg);
  send({ hello: { agent_id: agentId, version: facts.agent_version, facts, labels: {} } });

  call.on('data', (msg) => {
    switch (msg.kind) {
      case 'welcome': {  // heartbeat at once, then every interval (3 missed: link dropped)
        const w = msg.welcome;
        log(`connected (session ${w.session_id})`);
        const beat = () => send({ heartbeat: { agent_time_ms: Date.now(),
          metrics: { load1: os.loadavg()[0], mem_total_bytes: os.totalmem(),
            mem_available_bytes: os.freemem(), uptime_seconds: Math.floor(os.uptime()) } } });
        beat();
        clearInterval(heartbeat);
        heartbeat = setInterval(beat, w.heartbeat_interval_ms || 10000);
        break;
      }
      case 'command': run(msg.command); break;
      case 'cancel': running.get(msg.cancel.command_id)?.cancel(); break;
      case 'result_ack': {  // only now may the result be forgotten (a real agent: its outbox)
        const ack = msg.result_ack;
        log(`result of ${ack.command_id} acknowledged${ack.rejected ? ` (rejected: ${ack.reason})` : ''}`);
        if (++acked >= exitAfter) {  // done: half-close; musterd ends the stream with OK
          closing = true;
          clearInterval(heartbeat);
          call.end();
        }
        break;
      }
      default: break;  // an unknown message kind is ignored (docs/wire.md)
    }
  });
  call.on('error', (err) => fail(1, `link ended: ${grpc.status[err.code]}: ${err.details}`));
  call.on('status', (st) => {  // the stream's final status, after the server finished it
    if (!closing) fail(1, `link ended by the server: ${grpc.status[st.code]}: ${st.details}`);
    log('done');
    client.close();
    process.exit(0);
  });

  // 5. A command: CommandAccepted, CommandOutput per chunk at its byte offset in its stream,
  // then one CommandResult; the server answers the result with ResultAck.
  function run(cmd) {
    const id = cmd.command_id;
    if (running.has(id)) return;  // delivered again (at least once): already running here
    const startedAt = Date.now();
    const result = (fields) => send({ result: { command_id: id, started_at_ms: startedAt,
      finished_at_ms: Date.now(), ...fields } });
    const spec = cmd.exec;
    if (!spec || Date.now() > Number(cmd.expires_at_ms)) {
      return result({ outcome: 'COMMAND_OUTCOME_REJECTED', error: spec ? 'expired' : 'no exec spec' });
    }
    const [file, args] = spec.argv.length ? [spec.argv[0], spec.argv.slice(1)]
                                          : ['/bin/sh', ['-c', spec.script]];
    const child = spawn(file, args, { cwd: spec.cwd || undefined,
      env: { ...process.env, ...spec.env, ...spec.secret_env },  // secret_env: never logged
      stdio: ['ignore', 'pipe', 'pipe'] });
    let why = null, error = '';
    child.cancel = () => { why = 'COMMAND_OUTCOME_CANCELLED'; child.kill('SIGTERM'); };
    const timer = spec.timeout_ms ? setTimeout(() => {
      why = 'COMMAND_OUTCOME_TIMED_OUT'; child.kill('SIGTERM');
    }, spec.timeout_ms) : null;
    running.set(id, child);
    log(`running ${id}: ${file} ${args.join(' ')}`);
    send({ accepted: { command_id: id, started_at_ms: startedAt } });
    const offsets = { STDOUT: 0, STDERR: 0 };
    for (const [stream, pipe] of [['STDOUT', child.stdout], ['STDERR', child.stderr]]) {
      pipe.on('data', (data) => {  // pipe chunks are far below the 1 MiB limit per message
        send({ output: { command_id: id, stream: `OUTPUT_STREAM_${stream}`,
          offset: offsets[stream], data } });
        offsets[stream] += data.length;
      });
    }
    let done = false;
    const finish = (code, signal) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      running.delete(id);
      const exited = code !== null && code !== undefined && !error;
      result({ outcome: why ?? (exited && code === 0 ? 'COMMAND_OUTCOME_SUCCEEDED' : 'COMMAND_OUTCOME_FAILED'),
        has_exit_code: exited, exit_code: exited ? code : 0,
        signal: signal ? os.constants.signals[signal] : 0,
        error: error || (signal ? `killed by signal ${signal}` : ''),
        stdout_bytes: offsets.STDOUT, stderr_bytes: offsets.STDERR });
    };
    child.on('error', (err) => {  // could not start (ENOENT, EACCES, bad cwd)
      if (child.pid === undefined) { error = `cannot start ${file}: ${err.message}`; finish(null, null); }
    });
    child.on('close', finish);  // after the process exited and both pipes were drained
  }
}
