// The Node origin of tests/e2e/test_attest.py: examples/node/attest.mjs's middleware in front of
// an app that answers 200 with the claims and the token it received (so that the test, playing
// an attacker who got hold of a token, can replay it). Listens on 127.0.0.1, prints
// "listening PORT"; each line on stdin is the verifier's options as JSON, replacing the verifier
// before (the gateway, and so its JWKS URL, starts after this origin); until the first it answers
// 503. Ends when stdin closes.
import { createServer } from "node:http";
import { middleware } from "../../examples/node/attest.mjs";

let verify = null;
const server = createServer((req, res) => {
  if (!verify) {
    res.writeHead(503);
    return res.end();
  }
  verify(req, res, () => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ claims: req.attestation, token: req.headers["x-portcullis-identity"] }));
  });
});
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
  for (let nl = input.indexOf("\n"); nl >= 0; nl = input.indexOf("\n")) {
    verify = middleware(JSON.parse(input.slice(0, nl)));
    input = input.slice(nl + 1);
    console.log("configured");
  }
});
process.stdin.on("end", () => process.exit(0));
