// ESM entry of the `wsguard` package: the same objects as the CommonJS entry (one native module
// instance, whichever way it is loaded).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const wsguard = require('./index.js')

export const { Server } = wsguard
export default wsguard
