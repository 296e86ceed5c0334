/**
 * Render counters the browser tests and the benchmark read (`window.__renders`): they prove
 * that a streaming answer re-renders its own message, not the list. Counting is a few
 * increments per render; it stays in production builds so the bench measures what ships.
 */
export const renderCounts = { messageList: 0, messageItem: 0, composer: 0 };

(globalThis as { __renders?: typeof renderCounts }).__renders = renderCounts;
