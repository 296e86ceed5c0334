/**
 * A connected server's credential, encrypted in the function before it reaches Postgres:
 * AES-256-GCM with a key from the function secret `MCP_CREDENTIALS_KEY` (32 bytes, base64).
 * The key never appears in SQL text (Postgres logs can record statements); the table holds
 * only `iv || ciphertext`, bound to its server's id as additional data, so a row copied onto
 * another server does not decrypt. (On hosted Supabase, Vault is the alternative: it keeps
 * the key in the database instead of the functions' secrets.)
 */
import { z } from "zod";

export const CREDENTIALS_KEY_VARIABLE = "MCP_CREDENTIALS_KEY";
const IV_BYTES = 12;

/**
 * What the agent sends a server: one header (a bearer token is `Authorization`), or an OAuth
 * token set with what refreshing it needs (the authorization server, its metadata, the client
 * registered there, the resource the tokens are for).
 */
export const Credential = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("header"),
    name: z.string(),
    value: z.string(),
  }),
  z.object({
    kind: z.literal("oauth"),
    access_token: z.string(),
    refresh_token: z.string().optional(),
    authorization_server: z.string(),
    metadata: z.record(z.string(), z.unknown()),
    client: z.looseObject({ client_id: z.string(), client_secret: z.string().optional() }),
    resource: z.string(),
  }),
]);
export type Credential = z.infer<typeof Credential>;
export type OAuthCredential = Extract<Credential, { kind: "oauth" }>;

export type CredentialKey = CryptoKey;

/** The key from the environment, or undefined when the secret is not set. */
export async function credentialKeyFromEnv(
  env: Pick<typeof Deno.env, "get"> = Deno.env,
): Promise<CredentialKey | undefined> {
  const text = env.get(CREDENTIALS_KEY_VARIABLE);
  if (!text) return undefined;
  return await importCredentialKey(text);
}

export async function importCredentialKey(base64: string): Promise<CredentialKey> {
  let raw;
  try {
    raw = Uint8Array.from(atob(base64.trim()), (c) => c.charCodeAt(0));
  } catch {
    throw new Error(`${CREDENTIALS_KEY_VARIABLE} is not base64`);
  }
  if (raw.length !== 32) {
    throw new Error(`${CREDENTIALS_KEY_VARIABLE} must be 32 bytes (base64), not ${raw.length}`);
  }
  return await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

export async function encryptCredential(
  key: CredentialKey,
  serverId: string,
  credential: Credential,
): Promise<Uint8Array> {
  return await seal(key, serverId, credential);
}

/** The credential, or throws when the bytes were not sealed by this key for this server. */
export async function decryptCredential(
  key: CredentialKey,
  serverId: string,
  secret: Uint8Array,
): Promise<Credential> {
  return Credential.parse(await unseal(key, serverId, secret));
}

/**
 * `iv || AES-256-GCM(JSON)`, bound to `serverId` as additional data: what every secret about a
 * server (its credential, a sign-in's PKCE verifier) is stored as.
 */
export async function seal(key: CredentialKey, serverId: string, value: unknown) {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(serverId) },
    key,
    new TextEncoder().encode(JSON.stringify(value)),
  );
  const out = new Uint8Array(IV_BYTES + sealed.byteLength);
  out.set(iv);
  out.set(new Uint8Array(sealed), IV_BYTES);
  return out;
}

/** What `seal` sealed for this server, parsed JSON; throws for any other key or server. */
export async function unseal(
  key: CredentialKey,
  serverId: string,
  secret: Uint8Array,
): Promise<unknown> {
  const opened = await crypto.subtle.decrypt(
    {
      name: "AES-GCM",
      iv: secret.slice(0, IV_BYTES),
      additionalData: new TextEncoder().encode(serverId),
    },
    key,
    secret.slice(IV_BYTES),
  );
  return JSON.parse(new TextDecoder().decode(opened));
}

/** The header a credential is sent as. */
export function headersOf(credential: Credential): Record<string, string> {
  return credential.kind === "header"
    ? { [credential.name]: credential.value }
    : { Authorization: `Bearer ${credential.access_token}` };
}
