/**
 * Keeps a scroll container at its bottom while content grows (streaming text), unless the
 * user scrolled up to read: then it stays where he is.
 */
import { type RefObject, useEffect } from "react";

const NEAR_BOTTOM_PX = 48;

export function useStickToBottom(container: RefObject<HTMLElement | null>): void {
  useEffect(() => {
    const element = container.current;
    if (!element) return;
    let stuck = true;
    const onScroll = () => {
      stuck = element.scrollHeight - element.scrollTop - element.clientHeight < NEAR_BOTTOM_PX;
    };
    const observer = new MutationObserver(() => {
      if (stuck) element.scrollTop = element.scrollHeight;
    });
    observer.observe(element, { childList: true, subtree: true, characterData: true });
    element.addEventListener("scroll", onScroll, { passive: true });
    element.scrollTop = element.scrollHeight;
    return () => {
      observer.disconnect();
      element.removeEventListener("scroll", onScroll);
    };
  }, [container]);
}
