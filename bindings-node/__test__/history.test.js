'use strict'
// The host's reads of a channel's history and presence (core: host.rs over server/handle.rs):
// history(), presence() and presenceStats(), over real sockets with real tokens. Every argument
// rule is the core's.

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')

const { Server } = require('..')
const { connect, makeConfig, makeSecret, mintToken } = require('./support')

const { file: secretFile, secret } = makeSecret()
let server

before(async () => {
  const config = makeConfig(secretFile)
  // Keeps history and tracks presence; no client may read either (the host is trusted).
  config.channels.push({ pattern: 'feed:{id}', subscribe: {}, publish: {}, history_size: 10, presence: true })
  server = new Server(config)
  await server.listen()
})

after(() => server.close({ graceSecs: 1 }))

async function subscriber(sub, channel) {
  const client = await connect(server.port, mintToken(secret, { sub }))
  assert.equal((await client.request({ action: 'subscribe', channel })).type, 'ack')
  return client
}

test('history() pages in both orders and from a position', async () => {
  const client = await subscriber('pia', 'feed:1')
  for (let n = 0; n < 3; n++) {
    server.publish('feed:1', { n })
    assert.deepEqual((await client.nextMessage()).payload, { n })
  }
  const page = server.history('feed:1')
  const offsets = page.publications.map((p) => p.offset)
  assert.deepEqual(
    page.publications.map((p) => p.payload),
    [{ n: 0 }, { n: 1 }, { n: 2 }],
  )
  assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b))
  assert.equal(page.offset, offsets[2])
  assert.ok(page.epoch)
  const rest = server.history('feed:1', { sinceOffset: offsets[0], sinceEpoch: page.epoch })
  assert.deepEqual(
    rest.publications.map((p) => p.offset),
    offsets.slice(1),
  )
  const newest = server.history('feed:1', { limit: 2, newestFirst: true })
  assert.deepEqual(
    newest.publications.map((p) => p.offset),
    [offsets[2], offsets[1]],
  )
  await client.close()
})

test('history() refusals carry the core codes', () => {
  server.publish('feed:2', { n: 1 })
  const { epoch } = server.history('feed:2')
  const refusals = [
    [() => server.history('news'), 'history_not_kept'],
    [() => server.history('feed:2', { limit: 0 }), 'history_limit_invalid'],
    [() => server.history('feed:2', { limit: 1001 }), 'history_limit_invalid'],
    [() => server.history('feed:2', { sinceOffset: 99, sinceEpoch: epoch }), 'history_offset_ahead'],
    [() => server.history('feed:2', { sinceOffset: 0, sinceEpoch: 'other' }), 'history_epoch_changed'],
    [() => server.history('feed:2', { sinceOffset: 1 }), 'invalid_argument'],
    [() => server.history('feed:2', { limit: -1 }), 'invalid_argument'],
    [() => server.history('bad channel!'), 'invalid_channel'],
  ]
  for (const [call, code] of refusals) {
    assert.throws(call, (e) => e.code === code, code)
  }
})

test('presence() and presenceStats() list members and count sessions', async () => {
  const clients = [
    await subscriber('quinn', 'feed:3'),
    await subscriber('quinn', 'feed:3'),
    await subscriber('rosa', 'feed:3'),
  ]
  const page = await server.presence('feed:3')
  assert.deepEqual(page, {
    members: [
      { user: 'quinn', sessions: 2 },
      { user: 'rosa', sessions: 1 },
    ],
    next: null,
  })
  const first = await server.presence('feed:3', { limit: 1 })
  assert.deepEqual([first.members.map((m) => m.user), first.next], [['quinn'], 'quinn'])
  const rest = await server.presence('feed:3', { limit: 1, after: first.next })
  assert.deepEqual([rest.members.map((m) => m.user), rest.next], [['rosa'], null])
  assert.deepEqual(await server.presenceStats('feed:3'), { users: 2, clients: 3 })
  for (const client of clients) await client.close()
})

test('presence() refusals carry the core codes', async () => {
  const refusals = [
    [() => server.presence('news'), 'presence_not_tracked'],
    [() => server.presenceStats('news'), 'presence_not_tracked'],
    [() => server.presence('feed:1', { limit: 0 }), 'invalid_argument'],
    [() => server.presence('feed:1', { limit: -1 }), 'invalid_argument'],
    [() => server.presenceStats('bad channel!'), 'invalid_channel'],
  ]
  for (const [call, code] of refusals) {
    await assert.rejects(call, (e) => e.code === code, code)
  }
})
