// One Server-Sent Events stream for the whole page: GET /v1/events follows every document of the
// person signed in, new ones too; each event's data names its `document_id`. EventSource sends
// the session cookie by itself and, when the connection drops, reconnects with Last-Event-ID.
// The last id is also kept in sessionStorage (it is a position, not a secret), so a reload goes
// on from where the page was instead of being told every document's history again.

import { api } from "./api.js";

const NAMES = ["progress", "page", "card", "chunk_failed", "waiting", "done"];
const listeners = new Set();
let source = null;
let key = null; // sessionStorage key of the last event id: per person, a stream's ids are theirs
let retryMs = 1000;
let timer = null;
let stateListener = () => {};

export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// "live", "connecting" or "offline", for the indicator in the header.
export function onState(fn) {
  stateListener = fn;
}

export function openStream(session) {
  closeStream();
  key = `deckstream-events:${session.tenant_id}:${session.subject}`;
  connect();
}

export function closeStream() {
  clearTimeout(timer);
  if (source) source.close();
  source = null;
}

export function forgetPosition() {
  if (key) sessionStorage.removeItem(key);
}

function connect() {
  const last = sessionStorage.getItem(key);
  const url = last ? `/v1/events?last_event_id=${encodeURIComponent(last)}` : "/v1/events";
  const es = new EventSource(url);
  source = es;
  stateListener("connecting");
  es.onopen = () => {
    retryMs = 1000;
    stateListener("live");
  };
  for (const name of NAMES) {
    es.addEventListener(name, (message) => {
      if (message.lastEventId) sessionStorage.setItem(key, message.lastEventId);
      const data = JSON.parse(message.data);
      for (const fn of listeners) fn(name, data);
    });
  }
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) {
      stateListener("connecting"); // the browser reconnects by itself, with Last-Event-ID
      return;
    }
    // Refused (not a dropped connection): the session ended, the server is over a cap, or the
    // kept position is not one of this stream's. Ask which, then start again later.
    stateListener("offline");
    es.close();
    api("/v1/auth/session").then(
      () => {
        sessionStorage.removeItem(key); // a fresh stream tells everything again: nothing is lost
        timer = setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30_000);
      },
      () => {}, // a 401 there has already sent the page to sign-in
    );
  };
}
