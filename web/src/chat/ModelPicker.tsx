/** Which model answers the next message; remembered in this browser. */
import { useId, useState } from "react";
import { MODEL_CHOICES } from "../config.ts";

const STORAGE_KEY = "supabase-agent.model";

export function useModelChoice(): [string, (model: string) => void] {
  const [model, setModel] = useState(() => {
    const saved = localStorage.getItem(STORAGE_KEY) ?? "";
    return MODEL_CHOICES.includes(saved) ? saved : "";
  });
  return [model, (next) => {
    localStorage.setItem(STORAGE_KEY, next);
    setModel(next);
  }];
}

export function ModelPicker(
  { value, onChange }: { value: string; onChange(model: string): void },
) {
  const id = useId();
  return (
    <div className="model-picker">
      <label htmlFor={id}>Model</label>
      <select id={id} value={value} onChange={(event) => onChange(event.target.value)}>
        {MODEL_CHOICES.map((model) => (
          <option key={model} value={model}>{model === "" ? "Server default" : model}</option>
        ))}
      </select>
    </div>
  );
}
