/**
 * Assistant text as markdown (react-markdown: no raw HTML, so model output cannot inject
 * markup). Code blocks get their language and a copy button. Memoised on the text: a
 * streaming message re-parses only when its text grew.
 */
import { type ComponentProps, memo, useState } from "react";
import ReactMarkdown from "react-markdown";

function CodeBlock(props: ComponentProps<"pre">) {
  const { children, ...rest } = props;
  const [copied, setCopied] = useState<"no" | "yes" | "failed">("no");
  const code = children as { props?: { className?: string; children?: unknown } } | undefined;
  const language = /language-([\w+-]+)/.exec(code?.props?.className ?? "")?.[1];
  const text = String(code?.props?.children ?? "");
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setCopied("yes");
    } catch (error) {
      console.warn("copy failed", error);
      setCopied("failed");
    }
  };
  return (
    <div className="code-block">
      <div className="code-block-bar">
        <span>{language ?? "code"}</span>
        <button type="button" className="link-button" onClick={copy}>
          {copied === "yes" ? "Copied" : copied === "failed" ? "Copy failed" : "Copy"}
        </button>
      </div>
      <pre {...rest}>{children}</pre>
    </div>
  );
}

const COMPONENTS = { pre: CodeBlock };

export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown">
      <ReactMarkdown components={COMPONENTS}>{text}</ReactMarkdown>
    </div>
  );
});
