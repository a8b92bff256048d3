/**
 * @file The study writer's Worker: writeStudyFiles off the main thread.
 */
/// <reference lib="deno.worker" />
import { type WriteJob, writeStudyFiles } from "./study_writer.ts";
import { serveRequests } from "./worker_rpc.ts";

serveRequests(async (job: WriteJob) => ({ result: await writeStudyFiles(job) }));
