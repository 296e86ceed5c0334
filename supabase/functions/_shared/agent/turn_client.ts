/**
 * A client as a turn sees it: who it is, whether it is still there, how to send it frames, and
 * which turns it follows. The socket connection implements it; `chat.ts` and `resume.ts` know
 * nothing else of it, so unit tests hand them a fake.
 */
import type { ServerError, ServerFrame } from "../agent_protocol.ts";
import type { AccountRefusal } from "../account_access.ts";
import type { VerifiedUser } from "../auth.ts";

export interface TurnClient {
  readonly user: VerifiedUser;
  /** The request that opened it, for log lines. */
  readonly requestId?: string;
  /** The latest access token, when the client holds one (the socket does). */
  readonly accessToken?: string;
  readonly isOpen: boolean;
  send(frame: ServerFrame): void;
  sendError(error: ServerError): void;
  /** Its user may not act any more: tells it why and closes its socket (4003). */
  revokeAccess(refusal: AccountRefusal): void;
  /** Starts following a turn, replacing an earlier follow of the same turn. */
  follow(turnId: string, stop: () => void): void;
  /** Stops following it (only when `stop` is the current follow, if given). */
  unfollow(turnId: string, stop?: () => void): void;
}
