'use strict'
// The shared fixtures of tests/fixtures/ (core: hooks/answer.rs, host.rs), read at test time: the
// same data files drive the Rust, C and Python suites, so every host answers the same way.

const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')

const { Server } = require('..')
const { connect, makeConfig, makeSecret, mintToken } = require('./support')

const FIXTURES = path.join(__dirname, '..', '..', 'tests', 'fixtures')
const fixture = (name) => JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8'))

const { file: secretFile, secret } = makeSecret()

const answers = fixture('authenticate_answers.json')
for (const { name, answer, expect } of answers.cases) {
  test(`authenticate answer: ${name}`, async () => {
    const server = new Server(makeConfig(secretFile, { rpc: [{ method: answers.rpc_method }] }))
    server.authenticate(() => answer)
    server.rpc(answers.rpc_method, ({ identity: { roles, scopes, claims } }) => ({ roles, scopes, claims }))
    await server.listen()
    try {
      const connected = connect(server.port, mintToken(secret, answers.token_claims), { subprotocol: true })
      if (!expect.accepted) {
        await assert.rejects(connected, (error) => {
          assert.equal(error.status, expect.status)
          assert.equal(JSON.parse(error.body).error, expect.code)
          return true
        })
        return
      }
      const client = await connected
      const { payload: identity } = await client.request({ action: 'rpc', method: answers.rpc_method })
      await client.close()
      assert.deepEqual(identity.roles, expect.roles)
      assert.deepEqual(identity.scopes, expect.scopes)
      for (const [claim, value] of Object.entries(expect.claims)) {
        assert.deepEqual(identity.claims[claim], value, `claim ${claim}`)
      }
      for (const claim of expect.absent_claims) {
        assert.ok(!(claim in identity.claims), `claim ${claim} present`)
      }
    } finally {
      await server.close({ graceSecs: 0 })
    }
  })
}

for (const { name, input, config, text, path: file, code, paths } of fixture('config_errors.json').cases) {
  test(`config mistake: ${name}`, () => {
    const given = {
      // A JavaScript object; `{secret_file}` is replaced in its strings.
      value: () => JSON.parse(JSON.stringify(config).replaceAll('{secret_file}', JSON.stringify(secretFile).slice(1, -1))),
      text: () => text,
      path: () => file,
    }[input]
    assert.ok(given, `unknown input ${input}`)
    assert.throws(
      () => new Server(given()),
      (error) => {
        assert.equal(error.code, code, error.message)
        for (const expected of paths) assert.ok(error.message.includes(expected), `${expected} not in ${error.message}`)
        return true
      },
    )
  })
}
