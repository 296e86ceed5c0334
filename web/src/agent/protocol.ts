/**
 * The agent's wire protocol, imported from the one definition the server uses
 * (supabase/functions/_shared/agent_protocol.ts): the web client never restates a frame.
 */
export {
  ClientFrameSchema,
  CLOSE_CODES,
  decodeServerFrame,
  isTerminalFrame,
  TOKEN_SUBPROTOCOL_PREFIX,
} from "../../../supabase/functions/_shared/agent_protocol.ts";
export type {
  ApproveFrame,
  ChatFrame,
  ClientFrame,
  ErrorFrame,
  Limits,
  ServerFrame,
  TurnFrame,
  Usage,
} from "../../../supabase/functions/_shared/agent_protocol.ts";
