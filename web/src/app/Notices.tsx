/** Errors that belong to no single message (a refused frame, a protocol problem), with codes. */
import { useAgent, useNotices } from "../agent/useAgent.tsx";

export function Notices() {
  const notices = useNotices();
  const agent = useAgent();
  if (notices.length === 0) return null;
  return (
    <ul className="notices" aria-label="Problems">
      {notices.map((notice) => (
        <li key={notice.id} className="notice" role="alert">
          <code>{notice.code}</code> {notice.message}
          <button
            type="button"
            className="link-button"
            aria-label={`Dismiss ${notice.code}`}
            onClick={() => agent.store.dismissNotice(notice.id)}
          >
            Dismiss
          </button>
        </li>
      ))}
    </ul>
  );
}
