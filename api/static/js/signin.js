// Signing in (a user name and password, or an API key) and creating an account. The answer sets
// the HttpOnly session cookie; the page keeps only what the answer says (who, and the CSRF token).

import { api } from "./api.js";
import { $ } from "./dom.js";

let signedIn = () => {};

export function onSignedIn(fn) {
  signedIn = fn;
}

export function show(notice) {
  $("signin-notice").textContent = notice || "";
  $("signin-error").textContent = "";
  $("register-form").hidden = true;
  $("signin-form").hidden = false;
  $("signin-secret").value = "";
  $("signin-apikey").value = "";
  document.title = "Sign in · deckstream";
  $("signin-title").focus({ preventScroll: true });
}

function how() {
  return $("signin-form").elements.how.value;
}

function refusal(err) {
  if (err.status === 429 && err.retryAfter) return `${err.message} Try again in ${err.retryAfter} s.`;
  return err.message;
}

for (const radio of $("signin-form").elements.how) {
  radio.addEventListener("change", () => {
    const byKey = how() === "key";
    $("signin-password").hidden = byKey;
    $("signin-key").hidden = !byKey;
    $("signin-error").textContent = "";
  });
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = $("signin-error");
  const byKey = how() === "key";
  const body = byKey
    ? { key: $("signin-apikey").value.trim() }
    : { username: $("signin-username").value.trim(), password: $("signin-secret").value };
  if (byKey ? !body.key : !body.username || !body.password) {
    error.textContent = byKey ? "Enter the API key." : "Enter your user name and password.";
    return;
  }
  const button = e.submitter || $("signin-form").querySelector("button[type=submit]");
  button.disabled = true;
  error.textContent = "";
  try {
    const info = await api("/v1/auth/session", { method: "POST", json: body, quiet401: true });
    $("signin-secret").value = "";
    $("signin-apikey").value = "";
    signedIn(info);
  } catch (err) {
    error.textContent = err.status === 401 ? "That did not match: check and try again." : refusal(err);
  } finally {
    button.disabled = false;
  }
});

$("to-register").addEventListener("click", () => {
  $("signin-form").hidden = true;
  $("register-form").hidden = false;
  $("register-error").textContent = "";
  $("register-title").focus();
});

$("to-signin").addEventListener("click", () => {
  $("register-form").hidden = true;
  $("signin-form").hidden = false;
  $("signin-username").focus();
});

$("register-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = $("register-error");
  const username = $("register-username").value.trim();
  const password = $("register-secret").value;
  if (!username || password.length < 10) {
    error.textContent = "Choose a user name, and a password of at least 10 characters.";
    return;
  }
  error.textContent = "";
  try {
    const info = await api("/v1/auth/register", { method: "POST", json: { username, password }, quiet401: true });
    $("register-secret").value = "";
    signedIn(info);
  } catch (err) {
    if (err.code === "registration-closed") {
      error.textContent = "This server does not take new accounts: ask its operator to make one for you.";
    } else if (err.status === 409) {
      error.textContent = "That user name is taken: choose another.";
    } else {
      error.textContent = refusal(err);
    }
  }
});
