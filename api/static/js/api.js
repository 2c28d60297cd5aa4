// Every call the page makes to the API. The session is an HttpOnly cookie the browser sends by
// itself (same origin); the page holds only the session's CSRF token, in this module's memory,
// and sends it on every request that changes something. Errors are problem+json: their `detail`
// is what the user is told.

let csrf = null;
let ended = () => {};

export class ApiError extends Error {
  constructor(status, message, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code; // the problem's type, e.g. "registration-closed"
    this.retryAfter = retryAfter;
  }
}

export function useSession(info) {
  csrf = info ? info.csrf_token : null;
}

// Called when a call is refused for want of a session (it expired, or was ended elsewhere).
export function onSessionEnded(fn) {
  ended = fn;
}

function headersFor(method, extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (method !== "GET" && method !== "HEAD" && csrf) headers["X-CSRF-Token"] = csrf;
  return headers;
}

async function problemOf(response) {
  const body = await response.json().catch(() => null);
  const code = body && typeof body.type === "string" ? body.type.split("/").pop() : null;
  const detail = (body && (body.detail || body.title)) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, detail, code, response.headers.get("Retry-After"));
}

// A JSON call. `json` is sent as the body; the answer's JSON is returned (null for 204).
// `quiet401`: a 401 is the caller's business (signing in), not a session that ended.
export async function api(path, { method = "GET", json, signal, quiet401 = false } = {}) {
  const extra = json === undefined ? {} : { "Content-Type": "application/json" };
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headersFor(method, extra),
      body: json === undefined ? undefined : JSON.stringify(json),
      credentials: "same-origin",
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached: check the connection and try again.");
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && !quiet401) ended(problem);
    throw problem;
  }
  return response.status === 204 ? null : response.json();
}

// An upload (multipart, with the CSRF header). XMLHttpRequest rather than fetch: it reports
// how much of the body has been sent, for the row's "uploading 40 %".
export function upload(file, options, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("options", JSON.stringify(options));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents");
    for (const [name, value] of Object.entries(headersFor("POST"))) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, "The upload was cut off: check the connection and try again."));
    xhr.onload = async () => {
      const response = new Response(xhr.response, {
        status: xhr.status,
        headers: { "Retry-After": xhr.getResponseHeader("Retry-After") || "" },
      });
      if (xhr.status === 202) return resolve(await response.json());
      const problem = await problemOf(response);
      if (xhr.status === 401) ended(problem);
      reject(problem);
    };
    xhr.send(form);
  });
}
