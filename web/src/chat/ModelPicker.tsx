/**
 * Which model answers the next message; remembered in this browser. The choices are the
 * server's model catalogue (`public.models`, whose enabled rows RLS lets users read): the agent
 * refuses any other model, so offering one would only produce `model_not_allowed`.
 */
import { useEffect, useId, useState } from "react";
import { supabase } from "../supabase.ts";

const STORAGE_KEY = "supabase-agent.model";

export interface ModelOption {
  id: string;
  label: string;
}

/** The catalogue, read once per page load; a failed read is tried again by the next picker. */
let catalogue: Promise<ModelOption[] | undefined> | undefined;

function loadCatalogue(): Promise<ModelOption[] | undefined> {
  catalogue ??= (async () => {
    const { data, error } = await supabase.from("models").select("id, display_name").order("id");
    if (error) {
      catalogue = undefined;
      return undefined;
    }
    return data.map((row) => ({ id: row.id, label: row.display_name ?? row.id }));
  })();
  return catalogue;
}

/**
 * The chosen model ("" for the server's default) and the catalogue's choices (undefined until
 * read). A remembered model the catalogue no longer offers falls back to the default.
 */
export function useModelChoice(): [string, (model: string) => void, ModelOption[] | undefined] {
  const [model, setModel] = useState(() => localStorage.getItem(STORAGE_KEY) ?? "");
  const [choices, setChoices] = useState<ModelOption[] | undefined>();
  useEffect(() => {
    let live = true;
    void loadCatalogue().then((options) => {
      if (live) setChoices(options);
    });
    return () => {
      live = false;
    };
  }, []);
  const offered = model === "" || (choices?.some((option) => option.id === model) ?? false);
  return [offered ? model : "", (next) => {
    localStorage.setItem(STORAGE_KEY, next);
    setModel(next);
  }, choices];
}

export function ModelPicker(
  { value, choices, onChange }: {
    value: string;
    choices: ModelOption[] | undefined;
    onChange(model: string): void;
  },
) {
  const id = useId();
  return (
    <div className="model-picker">
      <label htmlFor={id}>Model</label>
      <select id={id} value={value} onChange={(event) => onChange(event.target.value)}>
        <option value="">Server default</option>
        {(choices ?? []).map((option) => (
          <option key={option.id} value={option.id}>{option.label}</option>
        ))}
      </select>
    </div>
  );
}
