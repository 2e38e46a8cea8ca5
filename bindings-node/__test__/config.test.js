'use strict'
// Config loading (core: config.rs, host.rs `ConfigInput`): every input form ends in the same Config,
// checked in full at construction, and every problem is reported at once with its key path, as an
// Error carrying the core's code and errno. The shared cases are in fixtures.test.js.

const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')

const { Server } = require('..')
const { makeConfig, makeSecret } = require('./support')

const { dir, file: secretFile } = makeSecret()

test('an object with two misspelled keys lists both, with config_invalid / 1002', () => {
  const config = makeConfig(secretFile)
  config.server = { ...config.server, lisen: '127.0.0.1:0' }
  config.limits = { ...config.limits, conections_per_ip: 3 }
  assert.throws(
    () => new Server(config),
    (error) => {
      assert.ok(error instanceof Error)
      assert.equal(error.code, 'config_invalid')
      assert.equal(error.errno, 1002)
      assert.match(error.message, /server\.lisen/)
      assert.match(error.message, /limits\.conections_per_ip/)
      const paths = error.problems.map((p) => p.path)
      assert.ok(paths.includes('server.lisen'), paths.join(', '))
      assert.ok(paths.includes('limits.conections_per_ip'), paths.join(', '))
      return true
    },
  )
})

test('wrong types are reported with their paths too', () => {
  const config = makeConfig(secretFile)
  config.server = { ...config.server, max_connections: 'many' }
  assert.throws(() => new Server(config), { code: 'config_invalid', errno: 1002, message: /server\.max_connections/ })
})

test('TOML text, JSON text and a file path are accepted', async () => {
  const toml = `
[server]
listen = "127.0.0.1:0"
[observability]
metrics_listen = ""
[origins]
allow_missing = true
[auth]
hmac_secret_file = ${JSON.stringify(secretFile)}
issuer = "https://issuer.test"
audience = "wsguard"
[[channels]]
pattern = "news"
subscribe = {}
`
  const tomlFile = path.join(dir, 'wsguard.toml')
  fs.writeFileSync(tomlFile, toml)
  const jsonFile = path.join(dir, 'wsguard.json')
  fs.writeFileSync(jsonFile, JSON.stringify(makeConfig(secretFile)))
  for (const input of [toml, JSON.stringify(makeConfig(secretFile)), tomlFile, jsonFile]) {
    const server = new Server(input)
    assert.ok((await server.listen()) > 0)
    await server.close()
  }
})

test('an object loads like its JSON text, large integers included', () => {
  const config = makeConfig(secretFile)
  config.auth = { ...config.auth, max_token_lifetime_secs: 5_000_000_000 }
  assert.doesNotThrow(() => new Server(config))
  assert.doesNotThrow(() => new Server(JSON.stringify(config)))
  config.auth.max_token_lifetime_secs = 1.5
  assert.throws(() => new Server(config), { code: 'config_invalid', message: /auth\.max_token_lifetime_secs/ })
})

test('a syntax error is config_syntax / 1001 with its line', () => {
  assert.throws(() => new Server('[server]\nlisten = \n'), (error) => {
    assert.equal(error.code, 'config_syntax')
    assert.equal(error.errno, 1001)
    assert.match(error.message, /line 2/)
    assert.equal(error.problems.length, 1)
    return true
  })
})

test('a short secret is found at construction: config_secret_missing / 1004', () => {
  const shortSecret = path.join(dir, 'short.secret')
  fs.writeFileSync(shortSecret, 'too short')
  assert.throws(() => new Server(makeConfig(shortSecret)), (error) => {
    assert.equal(error.code, 'config_secret_missing')
    assert.equal(error.errno, 1004)
    assert.ok(error.problems.length >= 1)
    return true
  })
})
