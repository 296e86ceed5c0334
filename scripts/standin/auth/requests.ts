/**
 * Request bodies of the Auth endpoints, validated with zod. Unknown fields are ignored, as
 * GoTrue (Go's JSON decoding) ignores them: auth-js sends `gotrue_meta_security`,
 * `code_challenge` and the like, which a local stand-in has no use for.
 */
import { z } from "zod";
import { AuthFailure } from "./responses.ts";

/** GoTrue's rule: bcrypt reads at most 72 bytes, so longer passwords are refused. */
export const MIN_PASSWORD_LENGTH = 6;
export const MAX_PASSWORD_BYTES = 72;
const MAX_EMAIL_LENGTH = 255;

/** The address check GoTrue applies (a practical subset of RFC 5322). */
const EMAIL_PATTERN =
  /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$/;

export const signupBody = z.object({
  email: z.string().nullish(),
  phone: z.string().nullish(),
  password: z.string().nullish(),
  data: z.record(z.string(), z.unknown()).nullish(),
});

export const passwordGrantBody = z.object({
  email: z.string().nullish(),
  phone: z.string().nullish(),
  password: z.string().nullish(),
});

/** `PUT /user` (auth-js `updateUser`); `nonce`, `channel` and PKCE fields are not used here. */
export const userUpdateBody = z.object({
  email: z.string().nullish(),
  phone: z.string().nullish(),
  password: z.string().nullish(),
  data: z.record(z.string(), z.unknown()).nullish(),
  app_metadata: z.record(z.string(), z.unknown()).nullish(),
});

export const refreshGrantBody = z.object({
  refresh_token: z.string().min(1, "refresh_token required"),
});

export async function readBody<T extends z.ZodType>(
  request: Request,
  schema: T,
): Promise<z.infer<T>> {
  const text = await request.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw new AuthFailure(
      400,
      "bad_json",
      `Could not parse request body as JSON: ${error.message}`,
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? issue.path.join(".") : "body";
    throw new AuthFailure(400, "validation_failed", `${where}: ${issue.message}`);
  }
  return parsed.data;
}

/** The address as GoTrue stores it (trimmed, lower case), or a 400 `validation_failed`. */
export function normalizeEmail(email: string): string {
  const normalized = email.trim().toLowerCase();
  if (normalized.length > MAX_EMAIL_LENGTH || !EMAIL_PATTERN.test(normalized)) {
    throw new AuthFailure(
      400,
      "validation_failed",
      "Unable to validate email address: invalid format",
    );
  }
  return normalized;
}

/** GoTrue's sign-up password rules: present, at least 6 characters, at most 72 bytes. */
export function checkNewPassword(password: string | null | undefined): string {
  if (!password) {
    throw new AuthFailure(422, "validation_failed", "Signup requires a valid password");
  }
  if ([...password].length < MIN_PASSWORD_LENGTH) {
    throw new AuthFailure(
      422,
      "weak_password",
      `Password should be at least ${MIN_PASSWORD_LENGTH} characters.`,
      { weak_password: { reasons: ["length"] } },
    );
  }
  if (new TextEncoder().encode(password).length > MAX_PASSWORD_BYTES) {
    throw new AuthFailure(
      422,
      "validation_failed",
      `Password cannot be longer than ${MAX_PASSWORD_BYTES} characters`,
    );
  }
  return password;
}
