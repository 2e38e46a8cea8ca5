// Compiled (never run) by module.test.js: a typed use of the public API. A change in
// lib/index.d.ts or the generated index.d.ts that breaks ordinary code fails here.
import { Server, type Identity, type ServerEvent, type Stats, type WsguardError } from 'wsguard'

async function main(): Promise<void> {
  let server: Server
  try {
    server = new Server({ server: { listen: '127.0.0.1:0' } })
  } catch (error) {
    const e = error as WsguardError
    const paths: string[] = e.problems.map((p) => p.path)
    console.log(e.code, e.errno, paths)
    return
  }
  server
    .rpc('orders.create', async (session, payload) => ({ by: session.identity.subject, payload }))
    .rpc('math.add', (_session, payload) => Number(payload.a) + Number(payload.b))
  server.authenticate((identity: Identity, handshake) =>
    handshake.origin === null ? true : { ...identity, roles: [...identity.roles, 'web'] },
  )
  server.authorize(async (request) => request.action === 'subscribe' || request.identity.roles.includes('editor'))
  server.on('event', (event: ServerEvent) => console.log(event.kind))
  const port: number = await server.listen()
  const queued: number = server.publish('news', { headline: 'hello' })
  const closed: number = server.disconnect({ user: 'alice' }) + server.disconnect(7)
  server.revoke({ jti: 'abc' })
  server.revoke({ issuedBefore: new Date() })
  const stats: Stats = server.stats()
  console.log(port, queued, closed, stats.sessions_active, server.port, server.address)
  await server.close({ graceSecs: 1 })
}

void main()
