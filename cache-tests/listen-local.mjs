// Preloaded (node --import) into the suite's origin server (server/server.mjs), which calls
// server.listen(port) and so would listen on every interface: this makes every listen() on a
// bare port bind 127.0.0.1 only. Nothing else of the server changes.
import http from 'node:http'
import https from 'node:https'

for (const Server of [http.Server, https.Server]) {
  const listen = Server.prototype.listen
  Server.prototype.listen = function (...args) {
    if (args.length >= 1 && (typeof args[0] === 'number' || typeof args[0] === 'string') &&
        (args.length === 1 || typeof args[1] === 'function')) {
      args.splice(1, 0, '127.0.0.1')
    }
    return listen.apply(this, args)
  }
}
