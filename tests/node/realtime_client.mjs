// Drives the official @supabase/realtime-js client (unchanged) for rtbook's integration tests.
//
// Usage: node realtime_client.mjs <url> <topic> <presenceKey>
//   env RT_APIKEY (socket apikey), RT_ACCESS_TOKEN (optional user JWT for the channel),
//   RT_CONFIG (optional JSON merged into the channel config), RT_PARAMS (optional JSON merged into the socket
//   params, e.g. {"log_level": "info"}).
// Prints one JSON object per line on stdout: {"kind": "status" | "broadcast" | "presence" | "pg" | "sent" | "system" |
// "frame", ...}; "frame" reports each binary frame the socket receives (its first bytes), observed on the transport.
// Reads commands on stdin: "broadcast <event>", "track <json>", "quit".
//
// Host names under .localhost resolve to 127.0.0.1 (RFC 6761) through the `lookup` option of the
// `ws` transport: that is a connection setting, the client itself is not modified.
import dns from 'node:dns'
import readline from 'node:readline'
import WebSocket from 'ws'
import { RealtimeClient } from '@supabase/realtime-js'

const [url, topic, presenceKey] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

function lookup(hostname, options, callback) {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    if (options && options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }])
    return callback(null, '127.0.0.1', 4)
  }
  return dns.lookup(hostname, options, callback)
}

class LocalhostWebSocket extends WebSocket {
  constructor(address, protocols, options) {
    super(address, protocols, { ...(options || {}), lookup })
    // Observation only: the client's own handlers still get every frame.
    this.on('message', (data, isBinary) => {
      if (!isBinary) return
      const u8 = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      out({ kind: 'frame', binary: true, length: u8.length, bytes: Array.from(u8.slice(0, 64)) })
    })
  }
}

const client = new RealtimeClient(url, {
  params: { apikey: process.env.RT_APIKEY, ...(process.env.RT_PARAMS ? JSON.parse(process.env.RT_PARAMS) : {}) },
  transport: LocalhostWebSocket,
  heartbeatIntervalMs: 5000,
  timeout: 10000,
})
if (process.env.RT_ACCESS_TOKEN) client.setAuth(process.env.RT_ACCESS_TOKEN)

const extra = process.env.RT_CONFIG ? JSON.parse(process.env.RT_CONFIG) : {}
const channel = client.channel(topic, {
  config: { broadcast: { self: false, ack: true }, presence: { key: presenceKey }, ...extra },
})
channel.on('broadcast', { event: '*' }, (msg) => out({ kind: 'broadcast', event: msg.event, payload: msg.payload }))
channel.on('presence', { event: 'sync' }, () => out({ kind: 'presence', keys: Object.keys(channel.presenceState()).sort() }))
channel.on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (p) =>
  out({ kind: 'pg', type: p.eventType, new: p.new, old: p.old, errors: p.errors }),
)
channel.on('system', {}, (p) => out({ kind: 'system', payload: p }))
channel.subscribe(async (status, err) => {
  out({ kind: 'status', status, error: err ? String(err.message || err) : null, vsn: client.vsn ?? null })
  if (status === 'SUBSCRIBED') {
    const res = await channel.track({ who: presenceKey })
    out({ kind: 'tracked', result: res })
  }
})

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const [cmd, ...rest] = line.trim().split(' ')
  if (cmd === 'broadcast') {
    const res = await channel.send({ type: 'broadcast', event: rest[0], payload: { from: presenceKey } })
    out({ kind: 'sent', event: rest[0], result: res })
  } else if (cmd === 'quit') {
    await client.removeAllChannels()
    client.disconnect()
    out({ kind: 'bye' })
    setTimeout(() => process.exit(0), 100)
  }
})
rl.on('close', () => process.exit(0))
setTimeout(() => { out({ kind: 'timeout' }); process.exit(3) }, 120000)
