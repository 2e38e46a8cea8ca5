'use strict'
// The server's lifecycle and its host-side API (core: server/): listen and close, publish,
// disconnect, revoke, stats and reload, over real sockets with the `ws` client and real tokens.
// (Bans are in limits.test.js.)

const assert = require('node:assert/strict')
const { execFileSync, spawn } = require('node:child_process')
const path = require('node:path')
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

test('listen() resolves with the bound port; close() is idempotent and works before listen()', async () => {
  const other = new Server(makeConfig(secretFile))
  assert.equal(other.port, null)
  const port = await other.listen()
  assert.ok(port > 0)
  assert.equal(other.port, port)
  assert.equal(other.address, `127.0.0.1:${port}`)
  await other.close({ graceSecs: 0.5 })
  await other.close()
  await assert.rejects(other.listen(), { code: 'not_running', errno: 5003 })
  await new Server(makeConfig(secretFile)).close()
})

test('close() during listen() leaves nothing running', async () => {
  const other = new Server(makeConfig(secretFile))
  const listening = other.listen().then(
    () => 'listened',
    (error) => error.code,
  )
  await other.close()
  // Whichever finished first, the server is stopped afterwards.
  assert.ok(['listened', 'not_running'].includes(await listening))
  assert.throws(() => other.publish('news', {}), { code: 'not_running' })
})

test('close() rejects a bad grace period before touching the server', async () => {
  const other = new Server(makeConfig(secretFile))
  assert.throws(() => other.close({ graceSecs: -1 }), { code: 'InvalidArg' })
  await other.close()
})

test('a server-side publish reaches a subscriber', async () => {
  const client = await connect(server.port, mintToken(secret))
  assert.deepEqual(await client.request({ action: 'subscribe', channel: 'news' }), { type: 'ack', id: 1 })
  assert.equal(server.publish('news', { headline: 'hello', n: 1 }), 1)
  assert.deepEqual(await client.nextMessage(), {
    type: 'message',
    channel: 'news',
    payload: { headline: 'hello', n: 1 },
  })
  assert.equal(server.publish('nobody-here', { x: 1 }), 0)
  await client.close()
})

test('publish errors carry the core code', () => {
  assert.throws(() => server.publish('bad channel', {}), { code: 'invalid_channel', errno: 4003 })
  assert.throws(() => server.publish('news', [1, 2]), { code: 'invalid_frame', errno: 4002 })
  assert.throws(() => new Server(makeConfig(secretFile)).publish('news', {}), { code: 'not_running' })
})

test('revoke by jti closes the live session with 4501 and refuses the token afterwards', async () => {
  const token = mintToken(secret, { sub: 'revoked-by-jti', jti: 'jti-1' })
  const client = await connect(server.port, token)
  server.revoke({ jti: 'jti-1' })
  assert.equal((await client.closed).code, 4501)
  await assert.rejects(connect(server.port, token), (error) => {
    assert.equal(error.status, 401)
    assert.match(error.body, /token_revoked/)
    return true
  })
})

test('revoke by subject and by time', async () => {
  const bySub = await connect(server.port, mintToken(secret, { sub: 'mallory' }))
  server.revoke({ sub: 'mallory' })
  assert.equal((await bySub.closed).code, 4501)

  const past = Math.floor(Date.now() / 1000) - 100
  const old = await connect(server.port, mintToken(secret, { sub: 'old', iat: past }))
  server.revoke({ issuedBefore: new Date((past + 1) * 1000) })
  assert.equal((await old.closed).code, 4501)

  for (const target of [{}, { jti: 'a', sub: 'b' }, { issuedBefore: -1 }, { issuedBefore: Number.NaN }]) {
    assert.throws(() => server.revoke(target), { code: 'invalid_argument', errno: 9004 }, JSON.stringify(target))
  }
})

/** Resolves with the next event of `kind` for `user`. */
function nextEvent(kind, user) {
  return nextEvents(kind, user, 1).then(([event]) => event)
}

/** Resolves with the next `count` events of `kind` for `user`. */
function nextEvents(kind, user, count) {
  return new Promise((resolve) => {
    const seen = []
    const listener = (event) => {
      if (event.user !== user) return
      seen.push(event)
      if (seen.length < count) return
      server.off(kind, listener)
      resolve(seen)
    }
    server.on(kind, listener)
  })
}

test('disconnect by session id and by user closes with 4001', async () => {
  const opened = nextEvent('session_opened', 'bob')
  const first = await connect(server.port, mintToken(secret, { sub: 'bob' }))
  const { session_id: sessionId } = await opened
  const closed = nextEvent('session_closed', 'bob')
  assert.equal(server.disconnect(sessionId), 1)
  assert.equal((await first.closed).code, 4001)
  // Once the server has finished the session, its id is unknown.
  await closed
  assert.throws(() => server.disconnect(sessionId), { code: 'unknown_session', errno: 5004 })
  assert.throws(() => server.disconnect(-1), { code: 'invalid_argument', errno: 9004 })

  // The client sees its 101 a moment before the server has registered the session: wait for both.
  const bothOpened = nextEvents('session_opened', 'carol', 2)
  const a = await connect(server.port, mintToken(secret, { sub: 'carol' }))
  const b = await connect(server.port, mintToken(secret, { sub: 'carol' }))
  await bothOpened
  assert.equal(server.disconnect({ user: 'carol' }), 2)
  assert.equal((await a.closed).code, 4001)
  assert.equal((await b.closed).code, 4001)
})

test('stats() answers at once on a fresh server', async () => {
  // In a child process: a stats() that blocks would block this test runner's thread too.
  const script = `
    const { Server } = require('..')
    const { makeConfig, makeSecret } = require('./support')
    const server = new Server(makeConfig(makeSecret().file))
    server.listen().then(() => {
      console.log(JSON.stringify(server.stats()))
      return server.close()
    })
  `
  const out = execFileSync(process.execPath, ['-e', script], { cwd: __dirname, encoding: 'utf8', timeout: 10_000 })
  const stats = JSON.parse(out)
  assert.equal(stats.sessions_active, 0)
  assert.equal(stats.sessions_total, 0)
})

test('stats() reports the core counters', async () => {
  const before = server.stats()
  const client = await connect(server.port, mintToken(secret, { sub: 'stats' }))
  await client.request({ action: 'ping' })
  const during = server.stats()
  assert.equal(typeof during.sessions_active, 'number')
  assert.ok(during.sessions_active >= 1)
  assert.ok(during.sessions_total > before.sessions_total)
  assert.ok(during.messages_in > before.messages_in)
  await client.close()
})

test('reload() with rules that forbid a subscribed channel drops it with an unsubscribed frame', async () => {
  const client = await connect(server.port, mintToken(secret, { sub: 'reloaded' }))
  assert.deepEqual(await client.request({ action: 'subscribe', channel: 'private' }), { type: 'ack', id: 1 })
  const reloaded = new Promise((resolve) => server.once('config_reloaded', resolve))

  const newsOnly = makeConfig(secretFile)
  newsOnly.channels = [{ pattern: 'news', subscribe: {}, publish: {} }]
  assert.equal(await server.reload(newsOnly), undefined)
  assert.deepEqual(await client.nextNotice(), { type: 'unsubscribed', channel: 'private', reason: 'forbidden' })
  assert.deepEqual(await reloaded, { kind: 'config_reloaded', is_applied: true, problems: [] })
  // The new rules hold for the open session too.
  assert.equal((await client.request({ action: 'subscribe', channel: 'private' })).code, 'forbidden')
  assert.deepEqual(await client.request({ action: 'subscribe', channel: 'news' }), { type: 'ack', id: 3 })

  // Back to the original rules, this time from JSON text (the constructor's forms all work).
  await server.reload(JSON.stringify(makeConfig(secretFile)))
  assert.deepEqual(await client.request({ action: 'subscribe', channel: 'private' }), { type: 'ack', id: 4 })
  await client.close()
})

test('an invalid reload() rejects with every problem and the server keeps serving unchanged', async () => {
  const client = await connect(server.port, mintToken(secret, { sub: 'steady' }))
  assert.deepEqual(await client.request({ action: 'subscribe', channel: 'private' }), { type: 'ack', id: 1 })

  const missingSecret = makeConfig(secretFile)
  missingSecret.auth = { ...missingSecret.auth, hmac_secret_file: '/nonexistent/wsguard-reload.secret' }
  missingSecret.channels = [{ pattern: 'news', subscribe: {} }]
  await assert.rejects(server.reload(missingSecret), (error) => {
    assert.ok(error instanceof Error)
    assert.equal(error.code, 'config_file')
    assert.equal(error.errno, 1003)
    assert.match(error.message, /auth\.hmac_secret_file/)
    assert.deepEqual(
      error.problems.map((p) => p.path),
      ['auth.hmac_secret_file'],
    )
    return true
  })

  const restartOnly = makeConfig(secretFile)
  restartOnly.server = { ...restartOnly.server, listen: '127.0.0.1:1' }
  await assert.rejects(server.reload(restartOnly), (error) => {
    assert.equal(error.code, 'config_invalid')
    assert.equal(error.errno, 1002)
    assert.ok(error.problems.some((p) => p.path === 'server.listen'), JSON.stringify(error.problems))
    return true
  })
  const misspelled = makeConfig(secretFile)
  misspelled.channels = [{ pattern: 'news', subscribe: {}, publsh: {} }]
  await assert.rejects(server.reload(misspelled), { code: 'config_invalid', message: /channels\[0\]\.publsh/ })
  await assert.rejects(server.reload('[server\n'), { code: 'config_syntax', errno: 1001 })

  // Nothing changed: the subscription stands, publications reach it, new clients get in.
  assert.equal(server.publish('private', { still: 'serving' }), 1)
  assert.deepEqual((await client.nextMessage()).payload, { still: 'serving' })
  assert.deepEqual(client.notices, [])
  const newcomer = await connect(server.port, mintToken(secret, { sub: 'newcomer' }))
  assert.deepEqual(await newcomer.request({ action: 'subscribe', channel: 'private' }), { type: 'ack', id: 1 })
  await newcomer.close()
  await client.close()
})

test('reload() rejects with not_running before listen()', async () => {
  const idle = new Server(makeConfig(secretFile))
  await assert.rejects(idle.reload(makeConfig(secretFile)), { code: 'not_running', errno: 5003 })
})

test('a listening server keeps the process alive, like a listening net.Server', async () => {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'listen-forever.js'), secretFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  try {
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim())))
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)))
    })
    await new Promise((resolve) => setTimeout(resolve, 500))
    const client = await connect(port, mintToken(secret))
    assert.equal(child.exitCode, null)
    await client.close()
  } finally {
    child.kill('SIGKILL')
  }
})

test('the process exits by itself after close(), with a client still connected', async () => {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'exit-after-close.js'), secretFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let output = ''
  child.stdout.on('data', (chunk) => (output += chunk))
  const started = Date.now()
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the child did not exit within 10 s; output: ${output}`))
    }, 10_000)
    child.on('exit', (exitCode) => {
      clearTimeout(timer)
      resolve(exitCode)
    })
  })
  assert.equal(code, 0, output)
  assert.match(output, /closed/)
  assert.ok(Date.now() - started < 10_000)
})
