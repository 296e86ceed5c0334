/**
 * `auth.users` and `auth.identities` as GoTrue writes and shows them, for email + password
 * users. Passwords are bcrypt hashes made by pgcrypto (cost 10, GoTrue's default), so a row
 * written here is one GoTrue itself could sign in.
 */
import type { Tx } from "../../../supabase/functions/_shared/db/client.ts";
import { AuthFailure } from "./responses.ts";

/** The `auth.users` columns the API shows (the generated types cover `public` only). */
export interface UserRecord {
  id: string;
  aud: string | null;
  role: string | null;
  email: string | null;
  email_confirmed_at: Date | null;
  phone: string | null;
  phone_confirmed_at: Date | null;
  confirmed_at: Date | null;
  last_sign_in_at: Date | null;
  raw_app_meta_data: Record<string, unknown> | null;
  raw_user_meta_data: Record<string, unknown> | null;
  created_at: Date | null;
  updated_at: Date | null;
  is_anonymous: boolean;
  banned_until: Date | null;
}

interface IdentityRecord {
  id: string;
  provider_id: string;
  user_id: string;
  identity_data: Record<string, unknown>;
  provider: string;
  last_sign_in_at: Date | null;
  created_at: Date | null;
  updated_at: Date | null;
  email: string | null;
}

const USER_COLUMNS = [
  "id",
  "aud",
  "role",
  "email",
  "email_confirmed_at",
  "phone",
  "phone_confirmed_at",
  "confirmed_at",
  "last_sign_in_at",
  "raw_app_meta_data",
  "raw_user_meta_data",
  "created_at",
  "updated_at",
  "is_anonymous",
  "banned_until",
];

/**
 * Nullable in the table but read by GoTrue into non-null strings: a row with a NULL in any of
 * them (a user inserted by hand without them) cannot be read, and every sign-in and token
 * refresh of that user fails with 500 "Database error querying schema" (supabase/auth#1940).
 * The stand-in reads them too, so a seed that would break real Auth breaks here.
 */
const GOTRUE_STRING_COLUMNS = [
  "confirmation_token",
  "recovery_token",
  "email_change_token_new",
  "email_change",
];

/** GoTrue leaves `instance_id` at the nil uuid on single-tenant installs. */
const INSTANCE_ID = "00000000-0000-0000-0000-000000000000";
const AUTHENTICATED = "authenticated";
const BCRYPT_COST = 10;

export interface NewEmailUser {
  email: string;
  password: string;
  data: Record<string, unknown>;
  now: Date;
}

/**
 * Inserts a confirmed email user (sign-ups are auto-confirmed locally, as with
 * `supabase start`) and its email identity. Resolves to undefined when the address is taken.
 */
export async function insertEmailUser(
  tx: Tx,
  input: NewEmailUser,
): Promise<UserRecord | undefined> {
  const id = crypto.randomUUID();
  const appMetadata = { provider: "email", providers: ["email"] };
  const identityData = { sub: id, email: input.email, email_verified: true, phone_verified: false };
  // GoTrue merges the identity's claims into the user's metadata on confirmation.
  const userMetadata = { ...input.data, ...identityData };
  // The partial unique index on email decides races between two sign-ups of one address.
  const [user] = await tx<UserRecord[]>`
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password,
      email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data,
      created_at, updated_at, is_sso_user, is_anonymous,
      confirmation_token, recovery_token, email_change_token_new, email_change)
    values (${INSTANCE_ID}, ${id}, ${AUTHENTICATED}, ${AUTHENTICATED}, ${input.email},
      extensions.crypt(${input.password}, extensions.gen_salt('bf', ${BCRYPT_COST})),
      ${input.now}, ${input.now}, ${jsonb(tx, appMetadata)},
      ${jsonb(tx, userMetadata)}, ${input.now}, ${input.now}, false, false, '', '', '', '')
    on conflict (email) where is_sso_user = false do nothing
    returning ${tx(USER_COLUMNS)}`;
  if (!user) return undefined;
  await tx`
    insert into auth.identities (provider_id, user_id, identity_data, provider,
      last_sign_in_at, created_at, updated_at)
    values (${id}, ${id}, ${jsonb(tx, identityData)}, 'email',
      ${input.now}, ${input.now}, ${input.now})`;
  return user;
}

/** Whether the address is registered at all (any letter case), for a clear sign-up error. */
export async function emailTaken(tx: Tx, email: string): Promise<boolean> {
  const [row] = await tx`
    select 1 from auth.users where lower(email) = ${email} and is_sso_user = false limit 1`;
  return row !== undefined;
}

export interface PasswordCheck {
  user: UserRecord;
  passwordMatches: boolean;
}

/** The email user with that address and whether the password matches its bcrypt hash. */
export async function checkPassword(
  tx: Tx,
  email: string,
  password: string,
): Promise<PasswordCheck | undefined> {
  // The CASE keeps crypt() away from rows without a bcrypt hash (it raises on a bad salt).
  const [row] = await tx<(UserRecord & { password_matches: boolean })[]>`
    select ${tx(USER_COLUMNS)}, ${tx(GOTRUE_STRING_COLUMNS)},
      case when encrypted_password like '$2%'
        then encrypted_password = extensions.crypt(${password}, encrypted_password)
        else false end as password_matches
    from auth.users
    where lower(email) = ${email} and is_sso_user = false and deleted_at is null
    limit 1`;
  if (!row) return undefined;
  const { password_matches, ...user } = readAsGoTrue(row);
  return { user, passwordMatches: password_matches };
}

export async function recordSignIn(tx: Tx, userId: string, now: Date): Promise<UserRecord> {
  const [user] = await tx<UserRecord[]>`
    update auth.users set last_sign_in_at = ${now}, updated_at = ${now}
    where id = ${userId}
    returning ${tx(USER_COLUMNS)}`;
  await tx`
    update auth.identities set last_sign_in_at = ${now}, updated_at = ${now}
    where user_id = ${userId} and provider = 'email'`;
  return user;
}

export async function findUser(tx: Tx, userId: string): Promise<UserRecord | undefined> {
  const [user] = await tx<UserRecord[]>`
    select ${tx(USER_COLUMNS)}, ${tx(GOTRUE_STRING_COLUMNS)}
    from auth.users where id = ${userId} and deleted_at is null`;
  return user && readAsGoTrue(user);
}

/** The row without GoTrue's string columns, or GoTrue's failure when one of them is NULL. */
function readAsGoTrue<T extends object>(row: T): T {
  const values = row as Record<string, unknown>;
  if (GOTRUE_STRING_COLUMNS.some((column) => values[column] === null)) {
    throw new AuthFailure(500, "unexpected_failure", "Database error querying schema");
  }
  const user = { ...values };
  for (const column of GOTRUE_STRING_COLUMNS) delete user[column];
  return user as T;
}

/** Whether `password` is the user's current one (GoTrue refuses to "change" to it). */
export async function hasPassword(tx: Tx, userId: string, password: string): Promise<boolean> {
  const [row] = await tx<{ matches: boolean }[]>`
    select case when encrypted_password like '$2%'
      then encrypted_password = extensions.crypt(${password}, encrypted_password)
      else false end as matches
    from auth.users where id = ${userId}`;
  return row?.matches ?? false;
}

export interface UserChange {
  /** A new password, stored as a bcrypt hash. */
  password?: string;
  /**
   * Merged into `raw_user_meta_data` as GoTrue's `UpdateUserMetaData` does: each key is set,
   * or removed when its value is null.
   */
  data?: Record<string, unknown>;
  now: Date;
}

/** Applies `PUT /user`'s changes to `auth.users` and answers the updated row. */
export async function updateUser(
  tx: Tx,
  user: UserRecord,
  change: UserChange,
): Promise<UserRecord> {
  let current = user;
  if (change.password !== undefined) {
    // GoTrue's UpdatePassword also drops every pending token sent to the user.
    [current] = await tx<UserRecord[]>`
      update auth.users set
        encrypted_password = extensions.crypt(${change.password},
          extensions.gen_salt('bf', ${BCRYPT_COST})),
        confirmation_token = '', confirmation_sent_at = null,
        recovery_token = '', recovery_sent_at = null,
        email_change_token_current = '', email_change_token_new = '', email_change_sent_at = null,
        phone_change_token = '', phone_change_sent_at = null,
        reauthentication_token = '', reauthentication_sent_at = null,
        updated_at = ${change.now}
      where id = ${user.id}
      returning ${tx(USER_COLUMNS)}`;
  }
  if (change.data !== undefined) {
    const metadata = { ...(current.raw_user_meta_data ?? {}) };
    for (const [key, value] of Object.entries(change.data)) {
      if (value === null) delete metadata[key];
      else metadata[key] = value;
    }
    [current] = await tx<UserRecord[]>`
      update auth.users set raw_user_meta_data = ${jsonb(tx, metadata)}, updated_at = ${change.now}
      where id = ${user.id}
      returning ${tx(USER_COLUMNS)}`;
  }
  return current;
}

export function isBanned(user: UserRecord, now: Date): boolean {
  return user.banned_until !== null && user.banned_until > now;
}

/** The user object of GoTrue's JSON: absent timestamps are left out, as GoTrue omits them. */
export async function userJson(tx: Tx, user: UserRecord): Promise<Record<string, unknown>> {
  const identities = await tx<IdentityRecord[]>`
    select id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at,
      updated_at, email
    from auth.identities where user_id = ${user.id} order by created_at, id`;
  return withoutNulls({
    id: user.id,
    aud: user.aud ?? "",
    role: user.role ?? "",
    email: user.email ?? "",
    email_confirmed_at: iso(user.email_confirmed_at),
    phone: user.phone ?? "",
    phone_confirmed_at: iso(user.phone_confirmed_at),
    confirmed_at: iso(user.confirmed_at),
    last_sign_in_at: iso(user.last_sign_in_at),
    app_metadata: user.raw_app_meta_data ?? {},
    user_metadata: user.raw_user_meta_data ?? {},
    identities: identities.map((identity) =>
      withoutNulls({
        identity_id: identity.id,
        id: identity.provider_id,
        user_id: identity.user_id,
        identity_data: identity.identity_data,
        provider: identity.provider,
        last_sign_in_at: iso(identity.last_sign_in_at),
        created_at: iso(identity.created_at),
        updated_at: iso(identity.updated_at),
        email: identity.email,
      })
    ),
    created_at: iso(user.created_at),
    updated_at: iso(user.updated_at),
    banned_until: iso(user.banned_until),
    is_anonymous: user.is_anonymous,
  });
}

/**
 * A jsonb parameter. postgres.js serializes it itself; a pre-stringified value would be
 * stored as a JSON string scalar instead of an object.
 */
function jsonb(tx: Tx, value: Record<string, unknown>) {
  // The metadata came through JSON.parse, so it is JSON; postgres.js's type cannot say so.
  return tx.json(value as never);
}

function iso(date: Date | null): string | null {
  return date === null ? null : date.toISOString();
}

function withoutNulls(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== null));
}
