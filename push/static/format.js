// Arguments rendered for people (the demo page). Records carry no ABI types, so two simple rules
// decide how a value shows (README, "The demo page"):
//  - a string of 0x + 40 hex digits is an address: shortened (0x5B38…eddC4), with a copy button;
//  - a decimal string is a token amount when its contract is in TOKENS and the argument's name
//    (the last part of its path: `value`, `order.amount`) is in AMOUNT_ARGS: shown with the
//    token's decimals and symbol; any other number is a plain number.
// Add your own tokens to TOKENS (or the names your ABI uses to AMOUNT_ARGS).

export const TOKENS = {
  DemoToken: { decimals: 18, symbol: "DEMO" }, // contracts/DemoToken.sol: decimals = 18
};
export const AMOUNT_ARGS = new Set(["value", "amount", "wad"]);

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const UINT = /^[0-9]+$/;

export function isAddress(v) {
  return typeof v === "string" && ADDRESS.test(v);
}

/** 0x5B38Da6a701c568545dCfcB03FcB875f56beddC4 → 0x5B38…eddC4 */
export function shortAddress(a) {
  return a.slice(0, 6) + "…" + a.slice(-5);
}

/** "1234500000000000000000", 18 → "1,234.5" (exact: BigInt, no float rounding). */
export function formatUnits(value, decimals) {
  const n = BigInt(value);
  const base = 10n ** BigInt(decimals);
  const whole = (n / base).toLocaleString("en-US");
  const frac = (n % base).toString().padStart(decimals, "0").replace(/0+$/, "");
  return frac ? whole + "." + frac : whole;
}

/** The token a record's argument is an amount of, or undefined. */
export function amountToken(contract, path) {
  const token = TOKENS[contract];
  const name = path.split(".").pop();
  return token && AMOUNT_ARGS.has(name) ? token : undefined;
}

/** [path, value] for every scalar or list in args (struct fields descend: order.amount). */
export function leaves(args, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(args || {})) {
    const path = prefix ? prefix + "." + k : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...leaves(v, path));
    else out.push([path, v]);
  }
  return out;
}

/** One value as DOM: an address with a copy button, a token amount, or plain text. */
export function valueNode(contract, path, v) {
  if (Array.isArray(v)) {
    const span = document.createElement("span");
    span.className = "list";
    v.forEach((item, i) => {
      if (i) span.append(", ");
      span.append(valueNode(contract, path, item));
    });
    if (!v.length) span.textContent = "[]";
    return span;
  }
  const span = document.createElement("span");
  const raw = typeof v === "string" ? v : JSON.stringify(v);
  span.dataset.raw = raw;
  if (isAddress(v)) {
    span.className = "addr";
    span.title = v;
    span.textContent = shortAddress(v);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "copy";
    copy.title = "copy " + v;
    copy.addEventListener("click", () => copyText(v, copy));
    const wrap = document.createElement("span");
    wrap.className = "addr-wrap";
    wrap.append(span, copy);
    return wrap;
  }
  const token = typeof v === "string" && UINT.test(v) ? amountToken(contract, path) : undefined;
  if (token) {
    span.className = "amount";
    span.title = v + " (" + token.decimals + " decimals)";
    span.textContent = formatUnits(v, token.decimals) + " " + token.symbol;
  } else {
    span.className = "plain";
    span.textContent = raw;
  }
  return span;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch {
    button.textContent = "copy failed"; // no clipboard (not a secure context): select by hand
  }
  setTimeout(() => { button.textContent = "copy"; }, 1500);
}

/** Names of well-known chains, for the chain label on each card; any other id shows as is. */
export const CHAINS = {
  1: "Ethereum", 10: "OP", 56: "BNB", 100: "Gnosis", 137: "Polygon", 8453: "Base",
  42161: "Arbitrum", 43114: "Avalanche", 59144: "Linea", 11155111: "Sepolia", 31337: "dev",
};

/** 8453 → "Base · 8453", 777 → "chain 777", undefined (an app record) → "". */
export function chainLabel(id) {
  if (id === undefined || id === null) return "";
  const name = CHAINS[id];
  return name ? name + " · " + id : "chain " + id;
}
