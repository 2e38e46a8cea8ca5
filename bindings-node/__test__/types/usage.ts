// Compiled (never run) by module.test.js: a typed use of the public API. A change in
// lib/index.d.ts or the generated index.d.ts that breaks ordinary code fails here.
import {
  Server,
  type AuthenticateAnswer,
  type BanInfo,
  type HandshakeInfo,
  type Identity,
  type ServerEvent,
  type Stats,
  type WsguardError,
} from 'wsguard'

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
  server.authenticate((handshake: HandshakeInfo, identity: Identity): AuthenticateAnswer =>
    handshake.origin === null ? true : { roles: [...identity.roles, 'web'], claims: { via: 'web', tenant: null } },
  )
  server.authenticate(async (_handshake, identity) => (identity.subject === 'mallory' ? { deny: 'suspended' } : false))
  // @ts-expect-error: `role` is no key of an answer (the core refuses it too)
  server.authenticate((): AuthenticateAnswer => ({ role: ['web'] }))
  server.authorize(async (request) => request.action === 'subscribe' || request.identity.roles.includes('editor'))
  server.on('event', (event: ServerEvent) => console.log(event.kind))
  server.on('session_closed', async (event) => {
    await new Promise((resolve) => setTimeout(resolve, 10, event))
  })
  const port: number = await server.listen()
  const queued: number = server.publish('news', { headline: 'hello' })
  const closed: number = server.disconnect({ user: 'alice' }) + server.disconnect(7)
  server.revoke({ jti: 'abc' })
  server.revoke({ issuedBefore: new Date() })
  const stats: Stats = server.stats()
  const applied: boolean = server.ban({ user: 'mallory' }, 60) && server.ban({ ip: '203.0.113.7' }, 1.5)
  const lifted: boolean = server.liftBan({ ip: '203.0.113.7' })
  // @ts-expect-error: a ban target names an ip or a user
  server.ban({}, 60)
  const bans: BanInfo[] = server.bans()
  const kinds: Array<'ip' | 'user'> = bans.map((b) => b.target.kind)
  await server.reload({ channels: [] })
  await server.reload('[server]\nlisten = "127.0.0.1:0"\n')
  console.log(port, queued, closed, stats.sessions_active, server.port, server.address, applied, lifted, kinds)
  await server.close({ graceSecs: 1 })
}

void main()
