// Types for @chainpush/client (index.js). The wire protocol: docs/protocol.md.

/** An event or state record (docs/seams.md §1). Integers in `args` are decimal strings. */
export interface ChainRecord {
  kind: "event" | "state" | string;
  id: string;
  chain_id: number;
  contract: string;
  address: string;
  event: string;
  args: Record<string, unknown>;
  block_number: number;
  block_hash: string;
  block_timestamp: number | null;
  tx_hash: string | null;
  log_index: number;
  status: "pending" | "confirmed" | "removed";
  incarnation?: number;
  address_paths?: string[];
  /** Wallet activity only (`contract` "erc20" | "erc721" | "erc1155"): the token, read once. */
  token?: TokenInfo;
}

/** A wallet-activity record's token (docs/seams.md §1); null where the token did not answer. */
export interface TokenInfo {
  standard: "erc20" | "erc721" | "erc1155";
  symbol: string | null;
  decimals: number | null;
}

/** A `message` frame (docs/protocol.md §5). */
export interface Message {
  type: "message";
  topic: string;
  offset: number;
  epoch: string | null;
  /** record id + "/" + status */
  id: string;
  record: ChainRecord;
}

/** A `subscribed` frame (docs/protocol.md §3). */
export interface Subscribed {
  type: "subscribed";
  topic: string;
  since: number;
  head: number;
  epoch: string | null;
  reset: boolean;
  ref?: string | null;
}

/** An `error` frame, or a client-side report (bad_json, unknown_type, renew_failed, …). */
export interface ClientError {
  code: string;
  message: string;
  ref?: string | null;
  topic?: string;
}

export type ConnectionState =
  | { state: "connecting"; url: string; attempt: number }
  | { state: "open"; url: string; user: string; node?: string; expiresAt?: number;
      /** the token's topic patterns, from the welcome frame (see grants()) */
      topics?: string[] }
  /** why it is not connected and when it tries again (retryAt: ms since the epoch) */
  | { state: "waiting"; reason: string; code?: number; delayMs: number; retryAt: number }
  | { state: "closed"; reason: string; code?: number };

/** Filter keys: event, status, kind, args.<path> (docs/protocol.md §3). */
export type Filter = Record<string, string | number | boolean | Array<string | number | boolean>>;

export interface SubscribeOptions {
  /** the last offset already had: 0 = from the first message, undefined = live only */
  since?: number;
  /** the stream `since` belongs to */
  epoch?: string;
  filter?: Filter;
}

/** Where a subscription stands; what `storage` keeps per topic. */
export interface Position {
  since: number | undefined;
  epoch: string | undefined;
}

/** The part of the Web Storage API used (localStorage, sessionStorage). */
export interface PositionStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** What the client needs of a WebSocket (the browser's, Node 22's, or npm ws). */
export interface SocketLike {
  readonly url: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // `any`: the browser's handlers take Event / MessageEvent / CloseEvent (the client reads
  // `data`, `code` and `reason`), other runtimes their own event types
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onopen: ((ev: any) => void) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onmessage: ((ev: any) => void) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onclose: ((ev: any) => void) | null;
}

export type TokenSource = () => Promise<string | { token: string }> | string | { token: string };

export interface ConnectOptions {
  /** push node websocket URLs, any node serves any user */
  urls: string[];
  /** the urls are this user's placement order (the auth service's `push_urls` for the user):
   * start with the first and fall back along the list; default false (a random start) */
  ordered?: boolean;
  /** a token to start with */
  token?: string;
  /** called for a first token (without `token`), before `expires_at` and after 4001/4003 */
  getToken?: TokenSource;
  /** keeps each topic's position across reloads (e.g. localStorage) */
  storage?: PositionStorage;
  /** prefix of the storage keys; default "chainpush:" */
  storagePrefix?: string;
  /** fetch a new token this long before expires_at (halfway for shorter tokens); default 60 */
  renewBeforeS?: number;
  /** full-jitter backoff: a random delay up to min(capMs, baseMs × 2^attempt) */
  backoff?: { baseMs?: number; capMs?: number };
  /** for tests and non-browser runtimes */
  WebSocket?: new (url: string) => SocketLike;
  now?: () => number;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
}

export interface ClientEvents {
  state: ConnectionState;
  subscribed: Subscribed;
  error: ClientError;
}

export declare class ChainpushClient {
  constructor(options: ConnectOptions);
  /** the last state event */
  readonly state: ConnectionState;
  on<E extends keyof ClientEvents>(event: E, fn: (value: ClientEvents[E]) => void): () => void;
  /** Returns the unsubscribe function. Subscribing again to a topic replaces it. */
  subscribe(topic: string, options?: SubscribeOptions,
            onMessage?: (msg: Message) => void): () => void;
  position(topic: string): Position | undefined;
  close(): void;
}

/** Open a client: it connects at once and keeps reconnecting until close(). */
export declare function connect(options: ConnectOptions): ChainpushClient;

/** user: and tx: topics compare case-insensitively; others exactly. */
export declare function topicKey(topic: string): string;
/** Whether token topic patterns grant `topic` (a tx: topic only through a `tx:` pattern). */
export declare function grants(patterns: readonly string[] | undefined, topic: string): boolean;
export declare function backoffDelay(attempt: number, random: () => number,
                                     options?: { baseMs?: number; capMs?: number }): number;
/** When to fetch a new token, in ms since the epoch. */
export declare function renewAt(expiresAtS: number, nowMs: number, renewBeforeS: number): number;
export declare const CLOSE_REASONS: Readonly<Record<number, string>>;

export declare const STATUS_RANK: Readonly<{ pending: 0; confirmed: 1; removed: 2 }>;
export declare function compareTransitions(a: ChainRecord, b: ChainRecord): number;
export declare function stateKey(r: ChainRecord): string;

export interface Applied {
  /** what the record id shows now */
  record: ChainRecord;
  /** whether that is the record just applied (false: stale or repeated) */
  changed: boolean;
  /** state records: the key and its current record (null when none is live) */
  key?: string;
  current?: ChainRecord | null;
}

/** Per record id the greatest (incarnation, status); per state key the live record of the
 * highest block (docs/protocol.md §5). */
export declare class RecordBook {
  constructor(options?: { maxRecords?: number; maxPerKey?: number });
  apply(record: ChainRecord): Applied;
  current(key: string): ChainRecord | null;
}

/** A transaction's lifecycle record on `tx:<hash>` (docs/seams.md §1 "Transaction records"). */
export interface TxRecord {
  kind: "tx";
  id: string;
  chain_id: number;
  tx_hash: string;
  event: "pending" | "mined" | "replaced" | "dropped";
  stage: TxStage;
  status: "pending" | "confirmed" | "removed";
  incarnation?: number;
  from: string | null;
  to: string | null;
  nonce: number | null;
  block_number: number | null;
  block_hash: string | null;
  block_timestamp: number | null;
  result: "success" | "reverted" | null;
  /** decimal strings */
  gas_used: string | null;
  effective_gas_price: string | null;
  /** the decoded events of watched contracts in its receipt */
  events: { contract: string; address: string; event: string;
            args: Record<string, unknown>; log_index: number }[];
  replaced_by: string | null;
}

export type TxStage = "pending" | "mined" | "confirmed" | "removed" | "replaced" | "dropped";
export declare function txStage(r: TxRecord): TxStage;
export declare const FINAL_TX_STAGES: readonly TxStage[];

export interface TxApplied {
  hash: string;
  record: TxRecord;
  stage: TxStage;
  /** every stage so far, in order */
  stages: TxStage[];
  /** false: a message already applied (a replay) */
  changed: boolean;
}

/** Where each followed transaction stands: the last step its topic delivered. */
export declare class TxBook {
  constructor(options?: { maxTxs?: number });
  apply(record: TxRecord): TxApplied;
  get(hash: string): { record: TxRecord; stage: TxStage; stages: TxStage[] } | undefined;
}
