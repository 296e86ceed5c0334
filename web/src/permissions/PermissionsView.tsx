/** The tools this user may use and how each is approved. */
import { usePermissions } from "./usePermissions.ts";
import { useConnections } from "../connections/useConnections.ts";

const MODE_TEXT = {
  auto: "Runs without asking",
  ask: "Asks you first",
  deny: "Never runs",
} as const;

export function PermissionsView({ userId }: { userId: string }) {
  const { grants, loading, error } = usePermissions(userId);
  const connected = useConnections(userId);
  const serverTools = connected.servers.flatMap((server) => server.tools);
  return (
    <section className="page" aria-labelledby="permissions-title">
      <h1 id="permissions-title">Permissions</h1>
      <p className="muted">
        The tools the agent may use for you. Grants are set by the project's administrators;
        answering an approval with “Always allow” sets a tool to run without asking.
      </p>
      {error && (
        <p className="inline-error" role="alert">
          <code>{error.code}</code> {error.message}
        </p>
      )}
      {loading
        ? <p className="muted">Loading…</p>
        : grants.length === 0
        ? <p>No tools are granted to you.</p>
        : (
          <div className="table-scroll">
            <table className="data-table" data-testid="permissions-table">
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Approval</th>
                  <th scope="col">Limits</th>
                </tr>
              </thead>
              <tbody>
                {grants.map((grant) => (
                  <tr key={grant.id} data-tool={grant.tool} data-mode={grant.approval_mode}>
                    <th scope="row">
                      <code>{grant.tool === "*" ? "* (every tool)" : grant.tool}</code>
                    </th>
                    <td>
                      <span className={`badge badge-${grant.approval_mode}`}>
                        {grant.approval_mode}
                      </span>{" "}
                      {MODE_TEXT[grant.approval_mode]}
                    </td>
                    <td>
                      {isEmpty(grant.constraints)
                        ? "—"
                        : <code className="constraints">{JSON.stringify(grant.constraints)}</code>}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      {serverTools.length > 0 && (
        <>
          <h2>Tools of your connected servers</h2>
          <div className="table-scroll">
            <table className="data-table" data-testid="server-tools-table">
              <thead>
                <tr>
                  <th scope="col">Tool</th>
                  <th scope="col">Approval</th>
                  <th scope="col">What it does</th>
                </tr>
              </thead>
              <tbody>
                {serverTools.map((tool) => (
                  <tr
                    key={tool.name}
                    data-tool={tool.name}
                    data-mode={tool.approval_mode ?? "none"}
                  >
                    <th scope="row">
                      <code>{tool.name}</code>
                    </th>
                    <td>
                      {tool.approval_mode
                        ? (
                          <>
                            <span className={`badge badge-${tool.approval_mode}`}>
                              {tool.approval_mode}
                            </span>{" "}
                            {MODE_TEXT[tool.approval_mode]}
                          </>
                        )
                        : "No grant"}
                    </td>
                    <td>{tool.description}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

function isEmpty(value: unknown): boolean {
  return typeof value === "object" && value !== null && Object.keys(value).length === 0;
}
