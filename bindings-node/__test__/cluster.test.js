'use strict'
// Two Node-hosted servers joined through the machine's Redis and NATS: the module passes the same
// `cluster` config to the same core, so publications and revocations cross nodes. Skipped (with
// the reason) without the brokers, unless WSGUARD_REQUIRE_BROKERS=1.

const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const net = require('node:net')
const { test } = require('node:test')

const { Server } = require('..')
const { connect, makeConfig, makeSecret, mintToken } = require('./support')

const { file: secretFile, secret } = makeSecret()
const BROKERS = { redis: 6379, nats: 4222 }

function reachable(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    socket.setTimeout(1000)
    socket.on('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.on('error', () => resolve(false))
    socket.on('timeout', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

async function waitFor(check, what) {
  const deadline = Date.now() + 5000
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen in time`)
    await new Promise((wake) => setTimeout(wake, 50))
  }
}

for (const kind of Object.keys(BROKERS)) {
  test(`${kind}: a publish on one node reaches the other, a revocation on it closes sessions there`, async (t) => {
    if (!(await reachable(BROKERS[kind]))) {
      const why = `${kind} is not reachable at 127.0.0.1:${BROKERS[kind]}`
      if (process.env.WSGUARD_REQUIRE_BROKERS === '1') throw new Error(`${why}, and WSGUARD_REQUIRE_BROKERS=1 forbids skipping`)
      t.skip(why)
      return
    }
    const prefix = `node-${crypto.randomBytes(6).toString('hex')}`
    const nodes = ['a', 'b'].map(
      (id) =>
        new Server(
          makeConfig(secretFile, {
            cluster: { broker: kind, url: `${kind}://127.0.0.1:${BROKERS[kind]}`, node_id: id, channel_prefix: prefix },
          }),
        ),
    )
    try {
      const [a, b] = nodes
      await a.listen()
      await b.listen()
      await waitFor(() => a.stats().broker_connected && b.stats().broker_connected, 'the broker connections')

      const subscriber = await connect(a.port, mintToken(secret, { sub: 'alice' }))
      assert.deepEqual(await subscriber.request({ action: 'subscribe', channel: 'news' }), { type: 'ack', id: 1 })
      assert.equal(b.publish('news', { n: 1 }), 0, 'no local subscriber on B')
      assert.deepEqual(await subscriber.nextMessage(), { type: 'message', channel: 'news', payload: { n: 1 } })

      b.revoke({ sub: 'alice' })
      assert.equal((await subscriber.closed).code, 4501)
    } finally {
      for (const node of nodes) await node.close({ graceSecs: 0.5 })
    }
  })
}
