// The web client: which screen shows (from the address's #fragment), who is signed in, and the
// one event stream every screen listens to.

import { api, onSessionEnded, useSession } from "./api.js";
import * as deck from "./deck.js";
import * as documents from "./documents.js";
import { $ } from "./dom.js";
import * as signin from "./signin.js";
import { closeStream, forgetPosition, onState, openStream } from "./stream.js";
import * as study from "./study.js";

// #/documents, #/deck/<id>, #/study, #/study/<id>
const ROUTES = {
  documents: { screen: "documents", show: () => documents.show() },
  deck: { screen: "deck", show: (id) => deck.show(id), hide: () => deck.hide() },
  study: { screen: "study", show: (id) => study.show(id), hide: () => study.hide() },
};
let session = null;
let current = null;

function route() {
  const [, name = "documents", id] = location.hash.split("/");
  return ROUTES[name] ? { ...ROUTES[name], name, id: id && decodeURIComponent(id) } : { ...ROUTES.documents, name: "documents" };
}

// The skip link's #main is a place on the page, not a screen.
const isRoute = () => !location.hash || location.hash.startsWith("#/");

function showScreen(name) {
  for (const section of document.querySelectorAll(".screen")) section.hidden = section.id !== `screen-${name}`;
  $("loading").hidden = true;
}

// Focus the new screen's heading, so a screen reader says where the user is now.
function focusHeading(name) {
  const heading = document.querySelector(`#screen-${name} h1`);
  if (heading) heading.focus({ preventScroll: true });
}

async function navigate() {
  if (!session || (current && !isRoute())) return;
  const next = route();
  if (current && current.hide) current.hide();
  current = next;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === (next.name === "deck" ? "documents" : next.name)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  showScreen(next.screen);
  focusHeading(next.screen);
  window.scrollTo(0, 0);
  await next.show(next.id);
}

function signedIn(info) {
  session = info;
  useSession(info);
  $("top").classList.add("signed-in");
  $("who").textContent = info.username ? `${info.username} · ${info.tenant_name}` : `${info.tenant_name} (API key)`;
  $("nav-analytics").hidden = !info.operator;
  navigate();
  // The list first, then the stream: what the stream tells again of older events is then seen
  // to be older than the rows, and left out (no row runs through its history again).
  documents.start().finally(() => session === info && openStream(info));
}

function signedOut(notice) {
  session = null;
  current = null;
  useSession(null);
  closeStream();
  documents.stop();
  deck.hide();
  study.hide();
  $("top").classList.remove("signed-in");
  showScreen("signin");
  signin.show(notice);
}

onSessionEnded(() => {
  if (session) signedOut("Your session has ended: sign in again.");
});

onState((state) => {
  $("live").dataset.state = state;
  $("live-text").textContent = { live: "live", connecting: "connecting…", offline: "offline" }[state];
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("/v1/auth/session", { method: "DELETE", quiet401: true });
  } catch {
    // Ended already: signed out all the same.
  }
  forgetPosition();
  signedOut("You are signed out.");
});

window.addEventListener("hashchange", navigate);
signin.onSignedIn(signedIn);

try {
  signedIn(await api("/v1/auth/session", { quiet401: true }));
} catch (err) {
  if (err.status === 401) signedOut("");
  else {
    $("loading").textContent = `The server did not answer as expected: ${err.message}`;
  }
}
