'use strict'
// Shared fixtures for the node:test suite: a temp HMAC secret, a config object, real HS256 tokens
// minted with node:crypto, and a small `ws` client that pairs replies with requests by id.

const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const WebSocket = require('ws')

const ISSUER = 'https://issuer.test'
const AUDIENCE = 'wsguard'

/** A fresh directory holding a 48-byte secret; removed when the test process exits. */
function makeSecret() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsguard-node-'))
  // Printable bytes: the server strips one trailing newline from a secret file (docs/CONFIG.md), so
  // raw random bytes ending in \n or \r\n would make a token signed with them fail.
  const secret = Buffer.from(crypto.randomBytes(48).toString('base64url'))
  const file = path.join(dir, 'hmac.secret')
  fs.writeFileSync(file, secret)
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
  return { dir, file, secret }
}

/** A config object on an ephemeral loopback port; `extra` sections are merged in. */
function makeConfig(secretFile, extra = {}) {
  return {
    server: { listen: '127.0.0.1:0', shutdown_grace_secs: 1 },
    // The admin listener (/metrics) is not under test: keep it off so tests never share a port.
    observability: { metrics_listen: '' },
    origins: { allow_missing: true },
    auth: { hmac_secret_file: secretFile, issuer: ISSUER, audience: AUDIENCE },
    hooks: { timeout_secs: 1 },
    limits: { rpc_timeout_secs: 1 },
    channels: [
      { pattern: 'news', subscribe: {}, publish: {} },
      { pattern: 'private', subscribe: {}, publish: {} },
    ],
    rpc: [
      { method: 'math.add' },
      { method: 'orders.create' },
      { method: 'fail.sync' },
      { method: 'fail.async' },
      { method: 'slow' },
      { method: 'void' },
      { method: 'not.json' },
    ],
    ...extra,
  }
}

const b64url = (data) => Buffer.from(data).toString('base64url')

/** A real HS256 JWT with the issuer and audience of `makeConfig`. */
function mintToken(secret, claims = {}) {
  const now = Math.floor(Date.now() / 1000)
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const body = b64url(
    JSON.stringify({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 300, ...claims }),
  )
  const signature = crypto.createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url')
  return `${header}.${body}.${signature}`
}

/** A connected client: `request(frame)` resolves with the reply to its id; `messages` collects
 * publications and `notices` the other frames the server sends unasked (`unsubscribed`, `gap`);
 * `closed` resolves with `{ code, reason }`. Rejects when the handshake fails, with the HTTP
 * status and body on the error. The token travels in the `Authorization` header, or with
 * `{ subprotocol: true }` as the `bearer.<token>` subprotocol entry (what browsers can send). */
function connect(port, token, { subprotocol = false } = {}) {
  return new Promise((resolve, reject) => {
    const ws = subprotocol
      ? new WebSocket(`ws://127.0.0.1:${port}/ws`, ['wsguard.v1', `bearer.${token}`])
      : new WebSocket(`ws://127.0.0.1:${port}/ws`, ['wsguard.v1'], { headers: { Authorization: `Bearer ${token}` } })
    const pending = new Map()
    const messages = []
    const messageWaiters = []
    const notices = []
    const noticeWaiters = []
    let nextId = 1
    const closed = new Promise((done) => {
      ws.on('close', (code, reason) => done({ code, reason: reason.toString() }))
    })
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString())
      if (frame.id !== undefined && pending.has(frame.id)) {
        pending.get(frame.id)(frame)
        pending.delete(frame.id)
      } else if (frame.type === 'message') {
        messages.push(frame)
        messageWaiters.splice(0).forEach((wake) => wake())
      } else {
        notices.push(frame)
        noticeWaiters.splice(0).forEach((wake) => wake())
      }
    })
    ws.on('unexpected-response', (_req, res) => {
      const error = new Error(`handshake refused with ${res.statusCode}`)
      error.status = res.statusCode
      let body = ''
      res.on('data', (chunk) => (body += chunk))
      res.on('end', () => {
        error.body = body
        reject(error)
      })
    })
    ws.on('error', reject)
    ws.on('open', () =>
      resolve({
        ws,
        closed,
        messages,
        notices,
        request(frame) {
          const id = nextId++
          return new Promise((done) => {
            pending.set(id, done)
            ws.send(JSON.stringify({ ...frame, id }))
          })
        },
        async nextMessage() {
          while (messages.length === 0) await new Promise((wake) => messageWaiters.push(wake))
          return messages.shift()
        },
        async nextNotice() {
          while (notices.length === 0) await new Promise((wake) => noticeWaiters.push(wake))
          return notices.shift()
        },
        close() {
          ws.close()
          return closed
        },
      }),
    )
  })
}

module.exports = { ISSUER, AUDIENCE, makeSecret, makeConfig, mintToken, connect }
