/**
 * The tool registry: the list of every tool the product offers. Each tool is defined once in
 * its own file (name, description, zod schemas, annotations, required permission, handler;
 * see `types.ts`) and served unchanged by the `mcp` function and the `agent` function through
 * `invokeTool` (`invoke.ts`). Adding a tool: its file, one line below, and its grant
 * (docs/tools.md).
 */
import { calculatorTool } from "./calculator.ts";
import { createExecuteWorkflowTool, type WorkflowConfig } from "./execute_workflow.ts";
import { getUsageTool } from "./get_usage.ts";
import { queryTableTool } from "./query_table.ts";
import { searchHistoryTool } from "./search_history.ts";
import type { ToolDefinition } from "./types.ts";

export interface ToolRegistryOptions {
  workflow: WorkflowConfig;
}

/** Every tool, in the order clients see them. */
export function createToolRegistry(options: ToolRegistryOptions): readonly ToolDefinition[] {
  return [
    calculatorTool,
    searchHistoryTool,
    getUsageTool,
    queryTableTool,
    createExecuteWorkflowTool(options.workflow),
  ];
}
