'use strict'
// Bans (core: limits/abuse.rs, through the server handle): an operator ban of a user or an IP
// refuses new handshakes with 403 `banned`, liftBan() lets the client in again, and bans() lists
// operator and automatic (`[abuse]`) bans alike, with the core's snake_case keys.

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Server } = require('..')
const { connect, makeConfig, makeSecret, mintToken } = require('./support')

const { file: secretFile, secret } = makeSecret()
let server

before(async () => {
  server = new Server(makeConfig(secretFile))
  await server.listen()
})

after(() => server.close({ graceSecs: 1 }))

/** Resolves with the HTTP status and body of a refused handshake; fails when it is accepted. */
async function refusal(port, token) {
  try {
    const client = await connect(port, token)
    await client.close()
  } catch (error) {
    return { status: error.status, body: error.body }
  }
  assert.fail('the handshake was accepted')
}

test('a banned user is refused with 403 banned, keeps open sessions, and gets in after liftBan()', async () => {
  assert.deepEqual(server.bans(), [])
  const open = await connect(server.port, mintToken(secret, { sub: 'eve' }))
  const applied = new Promise((resolve) => server.once('ban_applied', resolve))

  assert.equal(server.ban({ user: 'eve' }, 60), true)
  const { status, body } = await refusal(server.port, mintToken(secret, { sub: 'eve' }))
  assert.equal(status, 403)
  assert.equal(JSON.parse(body).error, 'banned')
  assert.deepEqual(await applied, {
    kind: 'ban_applied',
    target: { kind: 'user', value: 'eve' },
    reason: 'operator',
    ban_secs: 60,
  })
  // A ban refuses handshakes; the session opened before it goes on.
  assert.deepEqual(await open.request({ action: 'ping' }), { type: 'pong', id: 1 })

  const [ban, ...others] = server.bans()
  assert.deepEqual(others, [])
  assert.deepEqual(ban.target, { kind: 'user', value: 'eve' })
  assert.equal(ban.reason, 'operator')
  assert.ok(ban.remaining_secs > 0 && ban.remaining_secs <= 60, String(ban.remaining_secs))

  assert.equal(server.liftBan({ user: 'eve' }), true)
  assert.equal(server.liftBan({ user: 'eve' }), false)
  assert.deepEqual(server.bans(), [])
  const again = await connect(server.port, mintToken(secret, { sub: 'eve' }))
  await again.close()
  await open.close()
})

test('an IP ban refuses every client from that address until it is lifted', async () => {
  assert.equal(server.ban({ ip: '127.0.0.1' }, 30), true)
  assert.equal((await refusal(server.port, mintToken(secret, { sub: 'anyone' }))).status, 403)
  assert.deepEqual(
    server.bans().map((b) => [b.target, b.reason]),
    [[{ kind: 'ip', value: '127.0.0.1' }, 'operator']],
  )
  assert.equal(server.liftBan({ ip: '127.0.0.1' }), true)
  const client = await connect(server.port, mintToken(secret, { sub: 'anyone' }))
  await client.close()
})

test('ban() and liftBan() refuse a malformed target or duration by the core rules (invalid_argument)', () => {
  for (const [target, secs] of [
    [{}, 1],
    [{ ip: '127.0.0.1', user: 'both' }, 1],
    [{ ip: 'not-an-ip' }, 1],
    [{ user: 'x' }, -1],
    [{ user: 'x' }, Number.NaN],
    [{ user: 'x' }, Number.POSITIVE_INFINITY],
  ]) {
    const refused = { code: 'invalid_argument', errno: 9004 }
    assert.throws(() => server.ban(target, secs), refused, JSON.stringify([target, secs]))
  }
  assert.throws(() => server.liftBan({ ip: '::1::' }), { code: 'invalid_argument', errno: 9004 })
  assert.deepEqual(server.bans(), [])
})

test('an enormous ban length is refused by the core, not applied', () => {
  assert.throws(() => server.ban({ user: 'forever' }, 1e19), { code: 'invalid_argument', errno: 9004 })
  assert.deepEqual(server.bans(), [])
})

test('bans() lists automatic bans: refused tokens from one IP ban it', async () => {
  const guarded = new Server(makeConfig(secretFile, { abuse: { max_auth_failures: 2 } }))
  const port = await guarded.listen()
  try {
    for (let i = 0; i < 2; i++) assert.equal((await refusal(port, 'not-a-token')).status, 401)
    // Banned now: even a valid token is refused.
    const { status, body } = await refusal(port, mintToken(secret))
    assert.equal(status, 403)
    assert.equal(JSON.parse(body).error, 'banned')
    assert.deepEqual(
      guarded.bans().map((b) => [b.target, b.reason]),
      [[{ kind: 'ip', value: '127.0.0.1' }, 'auth_failures']],
    )
    assert.equal(guarded.liftBan({ ip: '127.0.0.1' }), true)
    const client = await connect(port, mintToken(secret))
    await client.close()
  } finally {
    await guarded.close()
  }
})

test('bans(), ban() and liftBan() throw not_running before listen()', () => {
  const idle = new Server(makeConfig(secretFile))
  assert.throws(() => idle.bans(), { code: 'not_running', errno: 5003 })
  assert.throws(() => idle.ban({ user: 'x' }, 1), { code: 'not_running' })
  assert.throws(() => idle.liftBan({ user: 'x' }), { code: 'not_running' })
})
