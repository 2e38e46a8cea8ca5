'use strict'
// The package surface: CommonJS `require` and ESM `import` give the same Server, and the
// committed type declarations compile against a typed use of the API.

const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const path = require('node:path')
const { test } = require('node:test')

const packageDir = path.join(__dirname, '..')

function node(args) {
  return execFileSync(process.execPath, args, { cwd: packageDir, encoding: 'utf8', timeout: 20_000 })
}

test('CommonJS require works by package name', () => {
  const out = node(['-e', "const w = require('wsguard'); console.log(typeof w.Server, w.default === w)"])
  assert.equal(out.trim(), 'function true')
  const { Server } = require('wsguard')
  assert.equal(Server, require('..').Server)
})

test('ESM import works, named and default, and is the same class', () => {
  const script = `
    import { Server } from 'wsguard'
    import wsguard from 'wsguard'
    import { createRequire } from 'node:module'
    const require = createRequire(import.meta.url)
    console.log(typeof Server, wsguard.Server === Server, require('wsguard').Server === Server)
  `
  assert.equal(node(['--input-type=module', '-e', script]).trim(), 'function true true')
})

test('the type declarations compile (tsc --noEmit)', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], {
    cwd: packageDir,
    encoding: 'utf8',
    timeout: 60_000,
  })
})
