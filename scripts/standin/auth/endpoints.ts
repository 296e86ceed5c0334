/**
 * The GoTrue endpoints supabase-js calls, each a function of the request. Failures are thrown
 * as `AuthFailure` (which rolls back the transaction they happen in) and answered by the
 * handler in `../auth_server.ts`.
 */
import { z } from "zod";
import { bearerToken, type TokenVerifier } from "../token_verifier.ts";
import type { Sql, Tx } from "../../../supabase/functions/_shared/db/client.ts";
import { issueAccessToken, jwksOf, type SigningKey } from "../signing_keys.ts";
import {
  checkNewPassword,
  MIN_PASSWORD_LENGTH,
  normalizeEmail,
  passwordGrantBody,
  readBody,
  refreshGrantBody,
  signupBody,
  userUpdateBody,
} from "./requests.ts";
import { AuthFailure, jsonResponse, noContent } from "./responses.ts";
import {
  endSessions,
  type IssuedSession,
  type LogoutScope,
  rotateRefreshToken,
  sessionExists,
  startSession,
} from "./sessions.ts";
import {
  checkPassword,
  emailTaken,
  findUser,
  hasPassword,
  insertEmailUser,
  isBanned,
  recordSignIn,
  updateUser,
  userJson,
  type UserRecord,
} from "./users.ts";

export interface EndpointContext {
  sql: Sql;
  signingKey: SigningKey;
  verifier: TokenVerifier;
  /** `<publicUrl>/auth/v1`, the `iss` of every access token. */
  issuer: string;
  accessTokenTtlSeconds: number;
  refreshTokenReuseIntervalSeconds: number;
  now: () => Date;
}

export type Endpoint = (context: EndpointContext, request: Request, url: URL) => Promise<Response>;

function inTransaction<T>(sql: Sql, work: (tx: Tx) => Promise<T>): Promise<T> {
  return sql.begin(work) as Promise<T>;
}

interface SignedIn {
  user: UserRecord;
  userObject: Record<string, unknown>;
  session: IssuedSession;
}

/** GoTrue's token response: the access token is signed after the transaction committed. */
async function sessionResponse(
  context: EndpointContext,
  signedIn: SignedIn,
  now: Date,
): Promise<Response> {
  const { user, userObject, session } = signedIn;
  const iat = Math.floor(now.getTime() / 1000);
  const ttl = context.accessTokenTtlSeconds;
  const accessToken = await issueAccessToken(context.signingKey, {
    userId: user.id,
    email: user.email ?? "",
    role: user.role || "authenticated",
    sessionId: session.sessionId,
    expiresIn: ttl,
    issuer: context.issuer,
    appMetadata: user.raw_app_meta_data ?? {},
    userMetadata: user.raw_user_meta_data ?? {},
    isAnonymous: user.is_anonymous,
    now: iat,
  });
  return jsonResponse({
    access_token: accessToken,
    token_type: "bearer",
    expires_in: ttl,
    expires_at: iat + ttl,
    refresh_token: session.refreshToken,
    user: userObject,
  });
}

/** Sign-up with email and password; confirmed at once, as `supabase start` does locally. */
export const signup: Endpoint = async (context, request) => {
  const body = await readBody(request, signupBody);
  if (!body.email) {
    if (body.phone) {
      throw new AuthFailure(422, "phone_provider_disabled", "Phone signups are disabled");
    }
    throw new AuthFailure(400, "validation_failed", "To signup, please provide your email");
  }
  const password = checkNewPassword(body.password);
  const email = normalizeEmail(body.email);
  const now = context.now();
  const signedIn = await inTransaction(context.sql, async (tx): Promise<SignedIn | undefined> => {
    if (await emailTaken(tx, email)) return undefined;
    const user = await insertEmailUser(tx, { email, password, data: body.data ?? {}, now });
    if (!user) return undefined;
    const session = await startSession(tx, user.id, now, request.headers.get("user-agent"));
    return { user, userObject: await userJson(tx, user), session };
  });
  if (!signedIn) throw new AuthFailure(422, "user_already_exists", "User already registered");
  return await sessionResponse(context, signedIn, now);
};

/** `POST /token?grant_type=password|refresh_token`. */
export const token: Endpoint = async (context, request, url) => {
  const grantType = url.searchParams.get("grant_type");
  if (grantType === "password") return await passwordGrant(context, request);
  if (grantType === "refresh_token") return await refreshTokenGrant(context, request);
  throw new AuthFailure(400, "validation_failed", "unsupported_grant_type");
};

const INVALID_CREDENTIALS = "Invalid login credentials";

async function passwordGrant(context: EndpointContext, request: Request): Promise<Response> {
  const body = await readBody(request, passwordGrantBody);
  if (!body.email && !body.phone) {
    throw new AuthFailure(400, "validation_failed", "missing email or phone");
  }
  // Phone sign-in is off locally, so a phone number matches nobody, as a wrong one would.
  if (!body.email || !body.password) {
    throw new AuthFailure(400, "invalid_credentials", INVALID_CREDENTIALS);
  }
  const email = body.email.trim().toLowerCase();
  const password = body.password;
  const now = context.now();
  const signedIn = await inTransaction(context.sql, async (tx): Promise<SignedIn> => {
    const check = await checkPassword(tx, email, password);
    // One answer for "no such user" and "wrong password": no probing for addresses.
    if (!check?.passwordMatches) {
      throw new AuthFailure(400, "invalid_credentials", INVALID_CREDENTIALS);
    }
    if (check.user.email_confirmed_at === null) {
      throw new AuthFailure(400, "email_not_confirmed", "Email not confirmed");
    }
    if (isBanned(check.user, now)) throw new AuthFailure(400, "user_banned", "User is banned");
    const user = await recordSignIn(tx, check.user.id, now);
    const session = await startSession(tx, user.id, now, request.headers.get("user-agent"));
    return { user, userObject: await userJson(tx, user), session };
  });
  return await sessionResponse(context, signedIn, now);
}

type RefreshResult =
  | { kind: "signed_in"; signedIn: SignedIn }
  | { kind: "reused" }
  | { kind: "not_found" };

async function refreshTokenGrant(context: EndpointContext, request: Request): Promise<Response> {
  const body = await readBody(request, refreshGrantBody);
  const now = context.now();
  const reuseIntervalMs = context.refreshTokenReuseIntervalSeconds * 1000;
  const result = await inTransaction(context.sql, async (tx): Promise<RefreshResult> => {
    const outcome = await rotateRefreshToken(tx, body.refresh_token, now, reuseIntervalMs);
    // A reuse must be answered with an error *and* commit the revocation, so it is returned
    // as a value rather than thrown (a throw would roll the revocation back).
    if (outcome.kind !== "rotated") return outcome;
    const user = await findUser(tx, outcome.userId);
    if (!user) return { kind: "not_found" };
    if (isBanned(user, now)) {
      throw new AuthFailure(400, "user_banned", "Invalid Refresh Token: User Banned");
    }
    const session = { sessionId: outcome.sessionId, refreshToken: outcome.refreshToken };
    return { kind: "signed_in", signedIn: { user, userObject: await userJson(tx, user), session } };
  });
  if (result.kind === "reused") {
    throw new AuthFailure(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used");
  }
  if (result.kind === "not_found") {
    throw new AuthFailure(
      400,
      "refresh_token_not_found",
      "Invalid Refresh Token: Refresh Token Not Found",
    );
  }
  return await sessionResponse(context, result.signedIn, now);
}

interface Caller {
  user: UserRecord;
  /** The `session_id` claim; tokens minted outside a sign-in may lack it. */
  sessionId?: string;
}

/**
 * The user behind the Bearer access token, checked as GoTrue checks it: a valid signature,
 * a user that still exists, and (when the token names one) a session not yet signed out.
 */
async function authenticate(context: EndpointContext, tx: Tx, request: Request): Promise<Caller> {
  const accessToken = bearerToken(request);
  if (!accessToken) {
    throw new AuthFailure(401, "no_authorization", "This endpoint requires a valid Bearer token");
  }
  const verdict = await context.verifier.verify(accessToken);
  if (!verdict.ok) {
    throw new AuthFailure(
      403,
      "bad_jwt",
      `invalid JWT: unable to parse or verify signature, ${verdict.message}`,
    );
  }
  const user = await findUser(tx, verdict.user.id);
  if (!user) {
    throw new AuthFailure(403, "user_not_found", "User from sub claim in JWT does not exist");
  }
  const claim = verdict.user.claims.session_id;
  const sessionId = typeof claim === "string" && claim !== "" ? claim : undefined;
  if (sessionId !== undefined && !(await sessionExists(tx, sessionId, user.id))) {
    throw new AuthFailure(
      403,
      "session_not_found",
      "Session from session_id claim in JWT does not exist",
    );
  }
  return { user, sessionId };
}

export const getUser: Endpoint = async (context, request) => {
  const userObject = await inTransaction(context.sql, async (tx) => {
    const caller = await authenticate(context, tx, request);
    return await userJson(tx, caller.user);
  });
  return jsonResponse(userObject);
};

/**
 * `PUT /user` (auth-js `updateUser`), as GoTrue's UserUpdate does it for what needs no
 * confirmation: `data` is merged into the user metadata, `password` replaces the password
 * (the same one again is 422 `same_password`) and signs out the user's other sessions.
 * An email or phone change needs a confirmation message the stand-in cannot send, so it is
 * refused before anything is written; `app_metadata` needs an admin, as on Supabase.
 * Answers the user object, the same shape as `GET /user`.
 */
export const updateUserEndpoint: Endpoint = async (context, request) => {
  const body = await readBody(request, userUpdateBody);
  const email = body.email ? normalizeEmail(body.email) : undefined;
  let password: string | undefined;
  if (typeof body.password === "string") {
    if (body.password === "") {
      throw new AuthFailure(
        422,
        "weak_password",
        `Password should be at least ${MIN_PASSWORD_LENGTH} characters.`,
        { weak_password: { reasons: ["length"] } },
      );
    }
    password = checkNewPassword(body.password);
  }
  const now = context.now();
  const userObject = await inTransaction(context.sql, async (tx) => {
    const caller = await authenticate(context, tx, request);
    const { user } = caller;
    if (body.app_metadata) {
      throw new AuthFailure(403, "not_admin", "Updating app_metadata requires admin privileges");
    }
    if (email !== undefined && email !== (user.email ?? "")) {
      if (await emailTaken(tx, email)) {
        throw new AuthFailure(
          422,
          "email_exists",
          "A user with this email address has already been registered",
        );
      }
      throw new AuthFailure(
        400,
        "email_address_not_authorized",
        `Email address "${email}" cannot be used as it is not authorized: an email change ` +
          "must be confirmed by email, and the local Auth stand-in sends no email",
      );
    }
    if (body.phone && body.phone !== (user.phone ?? "")) {
      throw new AuthFailure(
        422,
        "phone_provider_disabled",
        "Phone changes are disabled: the local Auth stand-in has no SMS provider",
      );
    }
    if (password !== undefined && await hasPassword(tx, user.id, password)) {
      throw new AuthFailure(
        422,
        "same_password",
        "New password should be different from the old password.",
      );
    }
    const updated = await updateUser(tx, user, {
      password,
      data: body.data ?? undefined,
      now,
    });
    if (password !== undefined) await endSessions(tx, user.id, caller.sessionId, "others");
    return await userJson(tx, updated);
  });
  return jsonResponse(userObject);
};

const logoutScope = z.enum(["global", "local", "others"]);

export const logout: Endpoint = async (context, request, url) => {
  const requested = url.searchParams.get("scope") || "global";
  const scope = logoutScope.safeParse(requested);
  if (!scope.success) {
    throw new AuthFailure(400, "validation_failed", `Unsupported logout scope "${requested}"`);
  }
  await inTransaction(context.sql, async (tx) => {
    const caller = await authenticate(context, tx, request);
    await endSessions(tx, caller.user.id, caller.sessionId, scope.data satisfies LogoutScope);
  });
  return noContent();
};

export const jwks: Endpoint = (context) =>
  // Public keys only; clients and functions may cache them, as GoTrue allows.
  Promise.resolve(
    jsonResponse(jwksOf(context.signingKey), 200, { "Cache-Control": "public, max-age=600" }),
  );

export const settings: Endpoint = () =>
  Promise.resolve(jsonResponse({
    external: {
      anonymous_users: false,
      email: true,
      phone: false,
    },
    disable_signup: false,
    mailer_autoconfirm: true,
    phone_autoconfirm: false,
    sms_provider: "",
    saml_enabled: false,
  }));

export const health: Endpoint = () =>
  Promise.resolve(jsonResponse({
    version: "local",
    name: "GoTrue",
    description: "Local stand-in for Supabase Auth (GoTrue)",
  }));
