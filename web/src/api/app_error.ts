/**
 * Errors the user sees: a stable `code` (the server's when it sent one) and a sentence.
 * Every failed call in the app ends up as one of these, shown where the call was made.
 */
export class AppError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "AppError";
  }
}

/** Any thrown value as an AppError, keeping a code when it has one. */
export function toAppError(error: unknown, fallbackCode = "unexpected_error"): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return new AppError(
      typeof code === "string" && code !== "" ? code : fallbackCode,
      error.message,
    );
  }
  return new AppError(fallbackCode, String(error));
}
