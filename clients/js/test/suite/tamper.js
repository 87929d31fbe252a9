// A malicious server for the client's tests: a fetch that sits between the
// client and the real server and may rewrite any request or answer (the
// same power as a tampering proxy or the server itself), in Node and in
// the browser alike. Rules are tried in order; the first that returns an
// answer wins.
import { unframe } from '../../src/index.js';

/** A fetch whose traffic the test rewrites, and the rules it runs. */
export function tamperer() {
  const rules = [];
  const fetchImpl = async (url, init = {}) => {
    const request = { url: String(url), method: init.method ?? 'GET', headers: { ...(init.headers ?? {}) }, body: init.body };
    for (const rule of rules) {
      const answer = await rule(request, () => fetch(request.url, { ...init, headers: request.headers }));
      if (answer) return answer;
    }
    return fetch(request.url, { ...init, headers: request.headers });
  };
  return { fetch: fetchImpl, rules, clear: () => rules.splice(0) };
}

/** A copy of `response` with `body` (bytes) and the headers changed. */
export function rewrite(response, body, headers = {}) {
  const copy = new Headers();
  response.headers.forEach((value, name) => copy.set(name, value));
  for (const [name, value] of Object.entries(headers)) {
    if (value === null) copy.delete(name);
    else copy.set(name, value);
  }
  copy.delete('content-length');
  return new Response(response.status === 204 || response.status === 304 ? null : body, { status: response.status, headers: copy });
}

/** Frames log entries as the server does. */
export function frame(entries) {
  const size = entries.reduce((n, e) => n + 12 + e.data.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const e of entries) {
    view.setBigUint64(at, BigInt(e.index));
    view.setUint32(at + 8, e.data.length);
    out.set(e.data, at + 12);
    at += 12 + e.data.length;
  }
  return out;
}

/** A rule that rewrites log reads of `key`: `edit(entries)` returns the entries to serve. */
export function editLog(key, edit) {
  return async (request, pass) => {
    if (request.method !== 'GET' || !request.url.includes(`/v1/stores/${encodeURIComponent(key)}/log`)) return null;
    const response = await pass();
    if (response.status !== 200) return response;
    const entries = unframe(new Uint8Array(await response.arrayBuffer()));
    return rewrite(response, frame(edit(entries)));
  };
}

/** A rule that serves `saved` (a captured answer: status, headers, body) for GETs of `key`. */
export function serveSaved(key, saved) {
  return async (request) => {
    const path = new URL(request.url).pathname;
    if (request.method !== 'GET' || path !== `/v1/stores/${encodeURIComponent(key)}`) return null;
    return new Response(saved.body, { status: saved.status, headers: saved.headers });
  };
}

/** Captures the current answer to a GET of a store, to replay it later. */
export async function capture(url, token, key) {
  const response = await fetch(`${url}/v1/stores/${encodeURIComponent(key)}`, { headers: { Authorization: `Bearer ${token}` } });
  const headers = {};
  response.headers.forEach((value, name) => (headers[name] = value));
  return { status: response.status, headers, body: new Uint8Array(await response.arrayBuffer()) };
}
