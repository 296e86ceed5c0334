/**
 * Which URLs the functions may call on a user's behalf: a connected MCP server must be a
 * public https server. Plain http is allowed only to 127.0.0.0/8 and only when the function
 * secret `MCP_ALLOW_LOOPBACK=true` says so (the local stand-in sets it for its doubles); every
 * other private, loopback, link-local, shared, multicast or reserved address is refused after
 * DNS resolution, whatever name points at it.
 *
 * The rebinding window: `fetch` resolves the name again when it connects, so a DNS server that
 * answers a public address to this check and a private one a moment later can still steer one
 * request inward. Deno's fetch cannot be handed the checked address. The window is one lookup
 * wide, every redirect is checked again, and the answers of such a request are bounded in size
 * and time like any other.
 */

export interface UrlPolicy {
  /** `MCP_ALLOW_LOOPBACK=true`: plain http (and https) to 127.0.0.0/8. */
  allowLoopback: boolean;
  /** `Deno.resolveDns`, or a stand-in in tests. */
  resolveDns: (host: string, type: "A" | "AAAA") => Promise<string[]>;
}

export type UrlCheck =
  | { ok: true; url: URL }
  | { ok: false; code: "url_not_allowed" | "server_unreachable"; message: string };

export function urlPolicyFromEnv(env: Pick<typeof Deno.env, "get"> = Deno.env): UrlPolicy {
  return {
    allowLoopback: env.get("MCP_ALLOW_LOOPBACK") === "true",
    resolveDns: (host, type) => Deno.resolveDns(host, type),
  };
}

/** Whether a server at `text` may be called, with the reason when it may not. */
export async function checkServerUrl(text: string, policy: UrlPolicy): Promise<UrlCheck> {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return refused(`"${text.slice(0, 200)}" is not a URL`);
  }
  if (url.username || url.password) return refused("a server URL may not hold a user or password");
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return refused(`${url.protocol} URLs are not allowed; use https`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, "");
  let addresses: string[];
  if (isIpv4(host) || host.includes(":")) {
    addresses = [host];
  } else {
    const settled = await Promise.allSettled([
      policy.resolveDns(host, "A"),
      policy.resolveDns(host, "AAAA"),
    ]);
    addresses = settled.flatMap((s) => s.status === "fulfilled" ? s.value : []);
    if (addresses.length === 0) {
      return { ok: false, code: "server_unreachable", message: `${host} does not resolve` };
    }
  }
  const loopbackOnly = addresses.every(isLoopbackV4);
  if (url.protocol === "http:" && !(policy.allowLoopback && loopbackOnly)) {
    return refused("plain http is not allowed; use https");
  }
  for (const address of addresses) {
    if (policy.allowLoopback && isLoopbackV4(address)) continue;
    if (!isPublicAddress(address)) {
      return refused(`${host} resolves to ${address}, a private or reserved address`);
    }
  }
  return { ok: true, url };
}

function refused(message: string): UrlCheck {
  return { ok: false, code: "url_not_allowed", message };
}

function isIpv4(text: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(text);
}

function isLoopbackV4(address: string): boolean {
  return isIpv4(address) && address.startsWith("127.");
}

function v4Number(address: string): number {
  return address.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

/** IPv4 ranges that are not the public Internet (RFC 6890 and its successors). */
const PRIVATE_V4: ReadonlyArray<[string, number]> = [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
];

/** Whether an address (IPv4 or IPv6 text) is on the public Internet. */
export function isPublicAddress(address: string): boolean {
  if (isIpv4(address)) {
    const parts = address.split(".").map(Number);
    if (parts.some((p) => p > 255)) return false;
    const n = v4Number(address);
    return !PRIVATE_V4.some(([base, bits]) => {
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      return ((n & mask) >>> 0) === ((v4Number(base) & mask) >>> 0);
    });
  }
  const groups = ipv6Groups(address);
  if (!groups) return false;
  if (groups.every((g) => g === 0)) return false; // ::
  if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return false; // ::1
  const first = groups[0];
  if ((first & 0xfe00) === 0xfc00) return false; // fc00::/7 unique local
  if ((first & 0xffc0) === 0xfe80) return false; // fe80::/10 link-local
  if ((first & 0xffc0) === 0xfec0) return false; // fec0::/10 site-local (deprecated)
  if ((first & 0xff00) === 0xff00) return false; // multicast
  if (first === 0x2001 && groups[1] === 0x0db8) return false; // documentation
  // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible and NAT64 (64:ff9b::/96): the IPv4 decides.
  const mapped = groups.slice(0, 5).every((g) => g === 0) &&
    (groups[5] === 0xffff || groups[5] === 0);
  const nat64 = first === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0);
  if (mapped || nat64) {
    const v4 = `${groups[6] >> 8}.${groups[6] & 255}.${groups[7] >> 8}.${groups[7] & 255}`;
    return isPublicAddress(v4);
  }
  return true;
}

/** The eight 16-bit groups of an IPv6 address, or undefined when it is not one. */
function ipv6Groups(text: string): number[] | undefined {
  let address = text.toLowerCase().split("%")[0];
  const v4 = address.match(/(\d{1,3}(\.\d{1,3}){3})$/);
  if (v4) {
    const n = v4Number(v4[1]);
    address = address.slice(0, -v4[1].length) +
      `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = address.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string) => part === "" ? [] : part.split(":").map((g) => parseInt(g, 16));
  const head = parse(halves[0]);
  const tail = halves.length === 2 ? parse(halves[1]) : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const groups = [...head, ...Array(Math.max(fill, 0)).fill(0), ...tail];
  if (groups.length !== 8 || groups.some((g) => Number.isNaN(g) || g < 0 || g > 0xffff)) {
    return undefined;
  }
  return groups;
}
