// What a record's messages add up to (docs/protocol.md §5), whatever order they arrive in:
// several topics, the `confirmed` of an older block after the `pending` of a newer one, replays
// after a reset. Pure: no I/O, no timers.

/** pending < confirmed < removed: a record id's later transitions rank higher. */
export const STATUS_RANK = Object.freeze({ pending: 0, confirmed: 1, removed: 2 });

/** > 0 if record a is a later transition of its id than b: (incarnation, status rank). */
export function compareTransitions(a, b) {
  return ((a.incarnation || 0) - (b.incarnation || 0)) ||
    (STATUS_RANK[a.status] - STATUS_RANK[b.status]);
}

/** A state record's key: `<Contract>.<fn>(<inputs>)`, e.g. `CallDemo.get()`. */
export function stateKey(r) {
  const inputs = (r.args && r.args.inputs) || [];
  return r.contract + "." + r.event + "(" + inputs.map((x) => JSON.stringify(x)).join(",") + ")";
}

/**
 * The current state of each record id and each state key. Feed it every record with apply();
 * it never goes backwards:
 *  - a record id shows its greatest (incarnation, status rank) message; older ones are stale;
 *  - a state key's value is its non-removed record with the highest block_number (ties, two
 *    forks of one height before the `removed` arrives: the later one); when that record is
 *    removed, the next highest live one is current again.
 * Memory is bounded: at most maxRecords ids (the least recently changed go first) and
 * maxPerKey records per state key (the lowest blocks go first).
 */
export class RecordBook {
  constructor({ maxRecords = 20000, maxPerKey = 256 } = {}) {
    this.maxRecords = maxRecords;
    this.maxPerKey = maxPerKey;
    this.records = new Map(); // record id -> {record, seq}: its greatest message so far
    this.keys = new Map(); // state key -> Map(record id -> {record, seq})
    this.seq = 0;
  }

  /**
   * Apply one record. Returns {record, changed, key, current}: record = what the id shows now,
   * changed = whether that is this record (false: stale or repeated); for state records,
   * key and current = the key's current record (null when none is live).
   */
  apply(record) {
    let live = null;
    const key = record.kind === "state" ? stateKey(record) : undefined;
    if (key !== undefined) {
      live = this.keys.get(key);
      if (!live) this.keys.set(key, (live = new Map()));
    }
    // a state key keeps its records longer than the id map may: ask it too
    const prev = this.records.get(record.id) || (live && live.get(record.id));
    const changed = !prev || compareTransitions(record, prev.record) > 0;
    const entry = changed ? { record, seq: prev ? prev.seq : ++this.seq } : prev;
    if (changed) {
      this.records.delete(record.id); // re-insert: eviction goes by last change
      this.records.set(record.id, entry);
      if (this.records.size > this.maxRecords) {
        this.records.delete(this.records.keys().next().value);
      }
      if (live) {
        live.set(record.id, entry);
        if (live.size > this.maxPerKey) this._prune(live);
      }
    }
    const out = { record: entry.record, changed };
    if (key !== undefined) {
      out.key = key;
      out.current = this.current(key);
    }
    return out;
  }

  /** The current record of a state key, or null. */
  current(key) {
    let best = null;
    for (const e of (this.keys.get(key) || new Map()).values()) {
      if (e.record.status === "removed") continue;
      if (!best || e.record.block_number > best.record.block_number ||
          (e.record.block_number === best.record.block_number && e.seq > best.seq)) best = e;
    }
    return best ? best.record : null;
  }

  _prune(live) {
    // the lowest blocks go first: they matter only if every block above them is removed
    const byBlock = [...live.entries()]
      .sort((a, b) => a[1].record.block_number - b[1].record.block_number);
    for (const [id] of byBlock.slice(0, live.size - this.maxPerKey)) live.delete(id);
  }
}

// --- transactions (tx:<hash>, docs/seams.md §1 "Transaction records") -------------------------

/** A tx record's lifecycle word: pending | mined | confirmed | removed | replaced | dropped. */
export function txStage(r) {
  if (r.stage) return r.stage;
  return r.event === "mined" ? (r.status === "pending" ? "mined" : r.status) : r.event;
}

/** Stages after which a transaction changes no more. */
export const FINAL_TX_STAGES = Object.freeze(["confirmed", "replaced", "dropped"]);

/**
 * Where each followed transaction stands. Feed it the records of its tx:<hash> topics with
 * apply(), in the order the topic delivers them (offsets: the watcher emits a transaction's
 * steps in the order they happened, so the last one is where it stands). A message already
 * applied (same id, status and incarnation: a replay) changes nothing. At most maxTxs hashes
 * (the least recently changed go first).
 */
export class TxBook {
  constructor({ maxTxs = 1000 } = {}) {
    this.maxTxs = maxTxs;
    this.txs = new Map(); // tx hash -> {record, stage, stages: [...], seen: Set(message ids)}
  }

  /** Apply one tx record: {hash, record, stage, stages, changed}. */
  apply(record) {
    const hash = record.tx_hash;
    let tx = this.txs.get(hash);
    if (!tx) tx = { record: null, stage: null, stages: [], seen: new Set() };
    const mid = record.id + "/" + record.status +
      (record.incarnation ? "/" + record.incarnation : "");
    const changed = !tx.seen.has(mid);
    if (changed) {
      tx.seen.add(mid);
      tx.record = record;
      tx.stage = txStage(record);
      tx.stages.push(tx.stage);
      this.txs.delete(hash); // re-insert: eviction goes by last change
      this.txs.set(hash, tx);
      if (this.txs.size > this.maxTxs) this.txs.delete(this.txs.keys().next().value);
    }
    return { hash, record: tx.record, stage: tx.stage, stages: [...tx.stages], changed };
  }

  /** Where ``hash`` stands: {record, stage, stages}, or undefined. */
  get(hash) {
    const tx = this.txs.get(hash);
    return tx && { record: tx.record, stage: tx.stage, stages: [...tx.stages] };
  }
}
