'use strict'
// Host handlers (core: hooks.rs): RPC handlers and the authenticate / authorize hooks as plain or
// async functions, their failures turned into the core's fail-closed answers, and events.

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Server } = require('..')
const { connect, makeConfig, makeSecret, mintToken } = require('./support')

const { file: secretFile, secret } = makeSecret()
let server

before(async () => {
  server = new Server(makeConfig(secretFile))
  server
    .rpc('math.add', (_session, { a, b }) => a + b)
    .rpc('orders.create', async (session, payload) => {
      await new Promise((resolve) => setTimeout(resolve, 10))
      return { order_id: 42, user: session.identity.subject, roles: session.identity.roles, sku: payload.sku }
    })
    .rpc('fail.sync', () => {
      throw new Error('out of stock')
    })
    .rpc('fail.async', async () => {
      throw new Error('payment declined')
    })
    .rpc('slow', () => new Promise(() => {}))
    .rpc('void', () => undefined)
    .rpc('not.json', () => () => 'a function')
  server.authorize(async ({ channel, identity }) => {
    if (identity.subject === 'authz-thrower') throw new Error('policy service down')
    return !(channel === 'private' && identity.subject !== 'admin')
  })
  server.authenticate(async (handshake, identity) => {
    if (identity.subject === 'blocked') return false
    if (identity.subject === 'suspended') return { deny: 'account suspended' }
    if (identity.subject === 'thrower') throw new Error('directory unavailable')
    if (identity.subject === 'confused') return 'yes'
    // A whole identity is not an answer (its `subject` and the other identity keys are unknown).
    if (identity.subject === 'legacy') return { ...identity, roles: ['vip'] }
    if (identity.subject === 'promoted') return { roles: [...identity.roles, 'vip'] }
    assert.equal(handshake.client_ip, '127.0.0.1')
    return true
  })
  await server.listen()
})

after(() => server.close({ graceSecs: 1 }))

test('handlers must be functions', () => {
  assert.throws(() => server.rpc('math.add', 42), { code: 'InvalidArg' })
  assert.throws(() => server.authorize('yes'), { code: 'InvalidArg' })
})

test('a sync RPC handler answers with its return value', async () => {
  const client = await connect(server.port, mintToken(secret))
  const reply = await client.request({ action: 'rpc', method: 'math.add', payload: { a: 2, b: 3 } })
  assert.deepEqual(reply, { type: 'result', id: 1, payload: 5 })
  await client.close()
})

test('an async RPC handler answers with the resolved value and sees the session', async () => {
  const client = await connect(server.port, mintToken(secret, { sub: 'dave', roles: ['buyer'] }))
  const reply = await client.request({ action: 'rpc', method: 'orders.create', payload: { sku: 'A-1' } })
  assert.deepEqual(reply.payload, { order_id: 42, user: 'dave', roles: ['buyer'], sku: 'A-1' })
  await client.close()
})

test('a throwing or rejecting handler answers rpc_failed with its message; the server lives on', async () => {
  const client = await connect(server.port, mintToken(secret))
  const thrown = await client.request({ action: 'rpc', method: 'fail.sync' })
  assert.equal(thrown.type, 'error')
  assert.equal(thrown.code, 'rpc_failed')
  assert.equal(thrown.message, 'out of stock')
  const rejected = await client.request({ action: 'rpc', method: 'fail.async' })
  assert.equal(rejected.code, 'rpc_failed')
  assert.equal(rejected.message, 'payment declined')
  const ok = await client.request({ action: 'rpc', method: 'math.add', payload: { a: 1, b: 1 } })
  assert.equal(ok.payload, 2)
  await client.close()
})

test('undefined answers null; a value that is not JSON answers rpc_failed', async () => {
  const client = await connect(server.port, mintToken(secret))
  assert.deepEqual(await client.request({ action: 'rpc', method: 'void' }), { type: 'result', id: 1, payload: null })
  const reply = await client.request({ action: 'rpc', method: 'not.json' })
  assert.equal(reply.code, 'rpc_failed')
  await client.close()
})

test('a handler that never answers is cut off by the core (hook_timeout)', async () => {
  const client = await connect(server.port, mintToken(secret))
  const started = Date.now()
  const reply = await client.request({ action: 'rpc', method: 'slow' })
  assert.equal(reply.code, 'hook_timeout')
  assert.ok(Date.now() - started < 3000)
  await client.close()
})

test('an undeclared method never reaches JavaScript', async () => {
  const client = await connect(server.port, mintToken(secret))
  const reply = await client.request({ action: 'rpc', method: 'not.declared' })
  assert.equal(reply.code, 'unknown_method')
  await client.close()
})

test('an authorize hook that denies answers forbidden; one that allows lets it through', async () => {
  const user = await connect(server.port, mintToken(secret, { sub: 'erin' }))
  const denied = await user.request({ action: 'subscribe', channel: 'private' })
  assert.equal(denied.type, 'error')
  assert.equal(denied.code, 'forbidden')
  assert.deepEqual(await user.request({ action: 'subscribe', channel: 'news' }), { type: 'ack', id: 2 })
  const admin = await connect(server.port, mintToken(secret, { sub: 'admin' }))
  assert.deepEqual(await admin.request({ action: 'subscribe', channel: 'private' }), { type: 'ack', id: 1 })
  const thrower = await connect(server.port, mintToken(secret, { sub: 'authz-thrower' }))
  assert.equal((await thrower.request({ action: 'subscribe', channel: 'news' })).code, 'forbidden')
  await user.close()
  await admin.close()
  await thrower.close()
})

test('an authenticate hook refuses with 403 on false, a deny, a throw or an invalid answer', async () => {
  for (const sub of ['blocked', 'suspended', 'thrower', 'confused', 'legacy']) {
    await assert.rejects(connect(server.port, mintToken(secret, { sub })), (error) => {
      assert.equal(error.status, 403, sub)
      assert.match(error.body, /rejected_by_hook/)
      return true
    })
  }
})

test('an authenticate hook can update the identity (handshake first, then identity)', async () => {
  const client = await connect(server.port, mintToken(secret, { sub: 'promoted' }))
  const reply = await client.request({ action: 'rpc', method: 'orders.create', payload: { sku: 'B-2' } })
  assert.deepEqual(reply.payload.roles, ['vip'])
  await client.close()
})

test('events arrive on the EventEmitter, as "event" and under their kind', async () => {
  const seen = []
  const listener = (event) => seen.push(event)
  server.on('event', listener)
  // Earlier tests' sessions may still report their close: wait for this user's.
  const closed = new Promise((resolve) => {
    const onClosed = (event) => {
      if (event.user !== 'frank') return
      server.off('session_closed', onClosed)
      resolve(event)
    }
    server.on('session_closed', onClosed)
  })
  const client = await connect(server.port, mintToken(secret, { sub: 'frank' }))
  await client.request({ action: 'subscribe', channel: 'bad channel' })
  await client.close()
  const event = await closed
  server.off('event', listener)
  assert.equal(event.user, 'frank')
  const kinds = seen.filter((e) => e.user === 'frank').map((e) => e.kind)
  assert.ok(kinds.includes('session_opened'), kinds.join(', '))
  assert.ok(kinds.includes('message_rejected'), kinds.join(', '))
  assert.ok(kinds.includes('session_closed'), kinds.join(', '))
})

test('a slow event listener fills the core queue: what does not fit is dropped and counted', async () => {
  // The core hands over the next event only once the listener's Promise settled, and keeps
  // `event_queue_capacity` events meanwhile: the rest are dropped and counted, never waited for.
  const slow = new Server(makeConfig(secretFile, { hooks: { timeout_secs: 5, event_queue_capacity: 1 } }))
  let running = 0
  let overlapped = false
  slow.on('event', async () => {
    running += 1
    overlapped ||= running > 1
    await new Promise((resolve) => setTimeout(resolve, 500))
    running -= 1
  })
  await slow.listen()
  // Each refused handshake is one `handshake_rejected` event, far faster than one per 500 ms.
  const attempts = Array.from({ length: 20 }, () => connect(slow.port, 'not-a-token').catch((e) => e.status))
  assert.ok((await Promise.all(attempts)).every((status) => status === 401 || status === 403))
  const { events_dropped: dropped } = slow.stats()
  assert.ok(dropped > 0, `events_dropped = ${dropped}`)
  assert.equal(overlapped, false, 'one event at a time')
  await slow.close({ graceSecs: 0 })
})
