// Variant 3 of scripts/bench: a plain JavaScript Worker that passes every request to the origin
// with fetch, unchanged (method, headers, body), and returns the origin's response as it is.
// ORIGIN is a text binding (http://127.0.0.1:PORT) set by bench/bench.py.
export default {
  fetch(request, env) {
    const url = new URL(request.url);
    return fetch(new Request(env.ORIGIN + url.pathname + url.search, request));
  },
};
