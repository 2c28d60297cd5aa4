// A document's progress snapshots, as the documents and deck screens compare them.

export const FINAL = new Set(["completed", "partial", "failed", "cancelled"]);
const ORDER = { uploading: -1, queued: 0, extracting: 1, generating: 2 }; // final ones: 3

const order = (status) => (FINAL.has(status) ? 3 : (ORDER[status] ?? 0));
const rank = (s) => s.pages_done + s.chunks_done + s.cards;

// Whether snapshot `s` is older than `cur`, which the page already shows. A stream that starts
// without a position tells each document's history first; those events must not take a row back
// in time. Counters only grow within a generation; a retry of failed chunks is the one step back
// in stage, and it has fewer failed chunks.
export function isOlder(s, cur) {
  if (!cur || cur.generation == null) return false;
  if (s.generation !== cur.generation) return s.generation < cur.generation;
  if (rank(s) !== rank(cur)) return rank(s) < rank(cur);
  return order(s.status) < order(cur.status) && s.chunks_failed >= cur.chunks_failed;
}
