/**
 * Where the user writes. Its text is its own state: typing re-renders the composer only, and
 * streaming tokens never re-render it (it subscribes to the session's running turn, which
 * changes when a turn starts or ends). Enter sends, Shift+Enter adds a line.
 */
import { type FormEvent, type KeyboardEvent, useId, useState } from "react";
import { useAgent, useConnectionStatus, useRunningTurn } from "../agent/useAgent.tsx";
import { renderCounts } from "../perf.ts";
import { ModelPicker, useModelChoice } from "./ModelPicker.tsx";

export interface ComposerProps {
  sessionId: string | undefined;
  onSend(content: string, model: string): void;
}

export function Composer({ sessionId, onSend }: ComposerProps) {
  renderCounts.composer++;
  const agent = useAgent();
  const running = useRunningTurn(sessionId);
  const [text, setText] = useState("");
  const [model, setModel, modelChoices] = useModelChoice();
  const id = useId();
  const status = useConnectionStatus();
  // A newer connection of the user took this tab's place: sending here would go nowhere.
  const replaced = status.state === "offline" && status.code === "replaced";
  const canSend = text.trim() !== "" && !running && !replaced;

  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    if (!canSend) return;
    onSend(text.trim(), model);
    setText("");
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) submit(event);
  };

  return (
    <form className="composer" onSubmit={submit}>
      {replaced && (
        <p className="inline-error" role="alert" data-testid="replaced-notice">
          This tab was replaced by a newer connection (another tab or device). Reconnect to use it
          here.
        </p>
      )}
      <label htmlFor={id} className="visually-hidden">Message</label>
      <textarea
        id={id}
        value={text}
        rows={2}
        placeholder="Message the agent (Enter sends, Shift+Enter for a new line)"
        onChange={(event) => setText(event.target.value)}
        onKeyDown={onKeyDown}
      />
      <div className="composer-actions">
        <ModelPicker value={model} choices={modelChoices} onChange={setModel} />
        {running && (
          <button
            type="button"
            className="danger"
            onClick={() => agent.cancel(running.turnId)}
          >
            Stop
          </button>
        )}
        <button type="submit" className="primary" disabled={!canSend}>Send</button>
      </div>
    </form>
  );
}
