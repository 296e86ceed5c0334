/**
 * A local double of the Supabase Management API, as much of it as
 * `supabase functions deploy --use-api` talks to, recording every upload.
 *
 * What the CLI (3.x) sends, read from `supabase/cli` (`pkg/function/deploy.go`) and observed:
 * `GET /v1/projects/<ref>` (the target it names), then for each function
 * `POST /v1/projects/<ref>/functions/deploy?slug=<name>&bundleOnly=true`, multipart with a
 * `metadata` part (JSON: name, entrypoint_path, import_map_path, verify_jwt, static_patterns)
 * and one `file` part per file whose filename is its path, and finally
 * `PUT /v1/projects/<ref>/functions` activating the bundles (one function alone is deployed
 * without `bundleOnly` and without the PUT). Every request carries the access token as Bearer.
 * Anything else is answered 404 and kept in `unexpected`, so a CLI that starts calling a new
 * route shows up in the rehearsal.
 */

export interface DeployMetadata {
  name?: string;
  entrypoint_path?: string;
  import_map_path?: string;
  verify_jwt?: boolean;
  static_patterns?: string[];
  [key: string]: unknown;
}

export interface UploadedFile {
  path: string;
  bytes: Uint8Array;
}

export interface RecordedUpload {
  slug: string;
  bundleOnly: boolean;
  metadata: DeployMetadata;
  files: UploadedFile[];
  /** Size of the multipart body as received. */
  bodyBytes: number;
}

export interface ManagementApiDouble {
  url: string;
  uploads: RecordedUpload[];
  /** Slugs activated by `PUT /v1/projects/<ref>/functions`. */
  activated: string[];
  /** Every request as `METHOD /path?query`, in order. */
  requests: string[];
  /** Requests the double does not know, or refused (bad token, wrong project, bad form). */
  unexpected: string[];
  close(): Promise<void>;
}

export interface DoubleOptions {
  projectRef: string;
  accessToken: string;
}

export function startManagementApiDouble(options: DoubleOptions): ManagementApiDouble {
  const uploads: RecordedUpload[] = [];
  const activated: string[] = [];
  const requests: string[] = [];
  const unexpected: string[] = [];
  const created = Date.now();
  const projectPath = `/v1/projects/${options.projectRef}`;

  const deployed = (upload: RecordedUpload, index: number) => ({
    id: `00000000-0000-4000-8000-${String(index + 1).padStart(12, "0")}`,
    slug: upload.slug,
    name: upload.metadata.name ?? upload.slug,
    version: 1,
    status: "ACTIVE",
    entrypoint_path: `file:///src/${upload.metadata.entrypoint_path}`,
    import_map_path: `file:///src/${upload.metadata.import_map_path}`,
    import_map: upload.metadata.import_map_path !== undefined,
    verify_jwt: upload.metadata.verify_jwt ?? true,
    created_at: created,
    updated_at: created,
  });
  const refuse = (label: string, status: number, message: string) => {
    unexpected.push(`${label} -> ${status} ${message}`);
    return Response.json({ message }, { status });
  };

  const handle = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const label = `${request.method} ${url.pathname}${url.search}`;
    requests.push(label);
    if (request.headers.get("authorization") !== `Bearer ${options.accessToken}`) {
      return refuse(label, 401, "Unauthorized");
    }
    if (!url.pathname.startsWith(projectPath)) return refuse(label, 404, "Project not found");
    const route = `${request.method} ${url.pathname.slice(projectPath.length) || "/"}`;
    if (route === "GET /") {
      return Response.json({
        id: options.projectRef,
        ref: options.projectRef,
        organization_id: "rehearsal-org",
        organization_slug: "rehearsal-org",
        name: "deploy rehearsal",
        region: "us-east-1",
        created_at: new Date(created).toISOString(),
        status: "ACTIVE_HEALTHY",
        database: {
          host: `db.${options.projectRef}.supabase.co`,
          version: "17.6.1.063",
          postgres_engine: "17",
          release_channel: "ga",
        },
      });
    }
    if (route === "GET /functions") return Response.json(uploads.map(deployed));
    if (route === "POST /functions/deploy") {
      const slug = url.searchParams.get("slug");
      if (!slug) return refuse(label, 400, "slug is required");
      const body = new Uint8Array(await request.arrayBuffer());
      let form: FormData;
      try {
        form = await new Request(url, {
          method: "POST",
          headers: { "content-type": request.headers.get("content-type") ?? "" },
          body,
        }).formData();
      } catch (error) {
        return refuse(label, 400, `not a multipart form: ${error}`);
      }
      const metadata = form.get("metadata");
      if (typeof metadata !== "string") return refuse(label, 400, "no metadata part");
      const files: UploadedFile[] = [];
      for (const [field, value] of form) {
        if (field === "metadata") continue;
        if (field !== "file" || typeof value === "string") {
          return refuse(label, 400, `unexpected part "${field}"`);
        }
        files.push({ path: value.name, bytes: new Uint8Array(await value.arrayBuffer()) });
      }
      const upload: RecordedUpload = {
        slug,
        bundleOnly: url.searchParams.get("bundleOnly") === "true",
        metadata: JSON.parse(metadata),
        files,
        bodyBytes: body.length,
      };
      uploads.push(upload);
      return Response.json(deployed(upload, uploads.length - 1), { status: 201 });
    }
    if (route === "PUT /functions") {
      const body = await request.json() as { slug?: string }[];
      activated.push(...body.map((entry) => entry.slug ?? "?"));
      return Response.json({
        functions: uploads.filter((upload) => activated.includes(upload.slug)).map(deployed),
      });
    }
    return refuse(label, 404, "Cannot " + route);
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handle);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    uploads,
    activated,
    requests,
    unexpected,
    close: () => server.shutdown(),
  };
}
