// Numbers and times in words.

export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const when = (ms) => (ms ? WHEN.format(new Date(ms)) : "—");

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
export function fromNow(ms, now = Date.now()) {
  const minutes = Math.round((ms - now) / 60000);
  if (Math.abs(minutes) < 60) return RELATIVE.format(minutes, "minute");
  const hours = Math.round(minutes / 60);
  if (Math.abs(hours) < 48) return RELATIVE.format(hours, "hour");
  return RELATIVE.format(Math.round(hours / 24), "day");
}

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
