'use strict'
// Server-side session operations (core: server/ops.rs): send, disconnectWith, subscribe,
// unsubscribe and the session and channel listings, over real sockets with real tokens. Every
// argument rule is the core's (`invalid_argument` and the other codes come from it).

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

/** A connected session of `sub` and its id (after a ping: registered). */
async function session(sub) {
  const client = await connect(server.port, mintToken(secret, { sub }))
  assert.equal((await client.request({ action: 'ping' })).type, 'pong')
  const page = server.sessions({ user: sub })
  assert.equal(page.sessions.length, 1)
  return { client, id: page.sessions[0].id }
}

test('send() pushes to a user and to one session', async () => {
  const { client: lena } = await session('lena')
  const { client: mike, id: mikeId } = await session('mike')
  const applied = server.send({ user: 'lena' }, { hello: 'lena' })
  assert.deepEqual(applied, { node: server.sessions().node, matched: 1, changed: 1, at_limit: 0, is_forwarded: false })
  assert.deepEqual(await lena.nextNotice(), { type: 'push', payload: { hello: 'lena' } })
  assert.equal(server.send({ sessionId: mikeId }, { n: 1 }).changed, 1)
  assert.deepEqual(await mike.nextNotice(), { type: 'push', payload: { n: 1 } })
  await lena.close()
  await mike.close()
})

test('refused operations carry the core codes and change nothing', async () => {
  const { client, id } = await session('nora')
  const mistakes = [
    [() => server.send({ sessionId: id, user: 'nora' }, {}), 'invalid_argument'],
    [() => server.send({}, {}), 'invalid_argument'],
    [() => server.send({ sessionId: -1 }, {}), 'invalid_argument'],
    [() => server.send({ user: 'nora', node: 'b' }, {}), 'invalid_argument'],
    [() => server.send({ sessionId: id + 1000 }, {}), 'unknown_session'],
    [() => server.send({ user: 'nora' }, [1]), 'invalid_frame'],
    [() => server.disconnectWith({ user: 'nora' }, 4000, ''), 'invalid_argument'],
    [() => server.disconnectWith({ user: 'nora' }, 70000), 'invalid_argument'],
    [() => server.disconnectWith({ user: 'nora' }, 4200, 'x'.repeat(124)), 'invalid_argument'],
    [() => server.subscribe({ user: 'nora' }, 'bad channel!'), 'invalid_channel'],
    [() => server.sessions({ limit: 0 }), 'invalid_argument'],
    [() => server.channels({ limit: 1001 }), 'invalid_argument'],
    [() => server.channels({ pattern: 'news:{' }), 'invalid_argument'],
  ]
  for (const [mistake, code] of mistakes) {
    assert.throws(mistake, { code })
  }
  assert.deepEqual(await client.request({ action: 'ping' }), { type: 'pong', id: 2 })
  assert.deepEqual(client.notices, [], 'nothing was queued for the session')
  assert.deepEqual(server.channels().channels, [])
  await client.close()
})

test('a server-made subscription bypasses the rules, is listed, and can be removed', async () => {
  const { client } = await session('olga')
  assert.equal((await client.request({ action: 'subscribe', channel: 'secret' })).code, 'forbidden')
  assert.equal(server.subscribe({ user: 'olga' }, 'secret').changed, 1)
  assert.deepEqual(await client.nextNotice(), { type: 'subscribed', channel: 'secret', by: 'server' })
  assert.equal(server.publish('secret', { x: 1 }), 1)
  assert.deepEqual(await client.nextMessage(), { type: 'message', channel: 'secret', payload: { x: 1 } })
  const page = server.sessions({ user: 'olga', limit: 10 })
  assert.deepEqual(page.sessions[0].subscriptions, ['secret'])
  assert.equal(page.sessions[0].client_ip, '127.0.0.1')
  assert.equal(page.next_cursor, null)
  assert.deepEqual(server.channels({ pattern: '{name}' }).channels, [{ channel: 'secret', subscribers: 1 }])
  assert.equal(server.unsubscribe({ user: 'olga' }, 'secret').changed, 1)
  assert.deepEqual(await client.nextNotice(), { type: 'unsubscribed', channel: 'secret', reason: 'server' })
  assert.equal(server.publish('secret', { x: 2 }), 0)
  await client.close()
})

test('disconnectWith() closes with the code and reason', async () => {
  const { client } = await session('pia')
  assert.equal(server.disconnectWith({ user: 'pia' }, 4300, 'moved').changed, 1)
  assert.deepEqual(await client.closed, { code: 4300, reason: 'moved' })
})

test('sessions() pages in id order', async () => {
  const opened = []
  for (const sub of ['u1', 'u2', 'u3']) opened.push((await session(sub)).client)
  const first = server.sessions({ limit: 2 })
  assert.equal(first.sessions.length, 2)
  assert.notEqual(first.next_cursor, null)
  const rest = server.sessions({ cursor: first.next_cursor, limit: 2 })
  const ids = [...first.sessions, ...rest.sessions].map((s) => s.id)
  assert.equal(ids.length, 3)
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b))
  assert.equal(rest.next_cursor, null)
  for (const client of opened) await client.close()
})
