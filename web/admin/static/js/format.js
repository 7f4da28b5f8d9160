// How values read on the page: money, dates, ids, the payout state. Pure (no DOM, no globals
// read at import), so node's test runner can import it.

export const dash = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
export const shortId = (id) => (id ? String(id).slice(0, 8) : "—");
export const titleCase = (text) =>
  text ? String(text).charAt(0).toUpperCase() + String(text).slice(1).toLowerCase() : "—";

/** Minor units (integer) as a decimal string with `exponent` digits, without float maths. */
export function minorToDecimal(minor, exponent) {
  const negative = minor < 0;
  const digits = String(Math.abs(Math.trunc(minor))).padStart(exponent + 1, "0");
  const whole = exponent ? digits.slice(0, -exponent) : digits;
  const fraction = exponent ? `.${digits.slice(-exponent)}` : "";
  return `${negative ? "-" : ""}${whole}${fraction}`;
}

const RELATIVE_UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["week", 7 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
];

/**
 * The page's formatters for one locale and one set of currency exponents (the server's own,
 * from GET /admin/me; Intl's digits are the fallback). Immutable: new exponents, new format.
 */
export function createFormat({ locale = "en-GB", exponents = {} } = {}) {
  const moneyFormats = new Map();
  const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "medium" });
  const relativeFormat = new Intl.RelativeTimeFormat(locale, { numeric: "auto" });

  function intlDigits(currency) {
    try {
      return new Intl.NumberFormat(locale, { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch {
      return null; // not a currency Intl knows
    }
  }

  function money(minor, currency) {
    if (minor === null || minor === undefined) return "—";
    if (!currency) return `${minor} (minor units)`;
    const exponent = exponents[currency] ?? intlDigits(currency);
    if (exponent === null || exponent === undefined) return `${minor} ${currency} (minor units)`;
    const key = `${currency}:${exponent}`;
    let numberFormat = moneyFormats.get(key);
    if (!numberFormat) {
      numberFormat = new Intl.NumberFormat(locale, {
        style: "currency",
        currency,
        minimumFractionDigits: exponent,
        maximumFractionDigits: exponent,
      });
      moneyFormats.set(key, numberFormat);
    }
    // Intl formats decimal strings exactly (no rounding through a double).
    return numberFormat.format(minorToDecimal(minor, exponent));
  }

  function date(iso) {
    if (!iso) return "—";
    const value = new Date(iso);
    return Number.isNaN(value.getTime()) ? String(iso) : dateTime.format(value);
  }

  function relative(iso, now = Date.now()) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return "—";
    const seconds = (at - now) / 1000;
    if (Math.abs(seconds) < 45) return "just now";
    for (const [unit, size] of RELATIVE_UNITS) {
      if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
    }
    return relativeFormat.format(Math.round(seconds / 60), "minute");
  }

  return Object.freeze({ locale, money, date, relative });
}

/** The payout's state as a pill: { kind: ok|bad|neutral|pending, text }, or null (none yet).
 * The API spells payout statuses in capitals. */
export function payoutState(deal) {
  // Paid, then taken back by the provider (a Stripe reversal, a Wise bounce).
  if (deal.payout_reversed_at) return { kind: "bad", text: "reversed" };
  if (deal.payout_status) {
    const status = String(deal.payout_status).toLowerCase();
    const kind = status === "succeeded" ? "ok" : status === "failed" ? "bad" : "neutral";
    return { kind, text: status };
  }
  if (deal.payout_requested_at) return { kind: "pending", text: "requested" };
  return null;
}
