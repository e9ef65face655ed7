//! The OpenAPI 3 description of the HTTP API, served at `/api/v1/openapi.json`. The schemas of
//! every body are generated from the types the handlers and the runner use (schemars), so they
//! cannot drift from the code; the paths are listed here (a test checks every route of the router
//! is described, and that every body refers to a generated schema).

use super::jobs::{BootJobList, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use crate::plans::PlanView;
use bootfarm_core::compare::Comparison;
use bootfarm_core::plan::BootPlan;
use bootfarm_core::protocol::{
    ClaimReply, ClaimRequest, CompleteReply, CompleteRequest, ErrorReply, HeartbeatReply,
    LeaseRequest, ReleaseReply, ReleaseRequest,
};
use bootfarm_core::result::BootResult;
use bootfarm_core::spec::BootJob;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};

/// The schemas of the API's bodies, and a `$ref` to each.
struct Schemas(SchemaGenerator);

impl Schemas {
    fn new() -> Self {
        Schemas(SchemaSettings::openapi3().into_generator())
    }

    /// `{"schema": <a $ref to T's component>}` for a media type.
    fn of<T: JsonSchema>(&mut self) -> Value {
        json!({"schema": self.0.subschema_for::<T>()})
    }

    fn json<T: JsonSchema>(&mut self) -> Value {
        json!({"application/json": self.of::<T>()})
    }

    fn body<T: JsonSchema>(&mut self) -> Value {
        json!({"required": true, "content": self.json::<T>()})
    }

    fn error(&mut self, description: &str) -> Value {
        json!({"description": description, "content": self.json::<ErrorReply>()})
    }

    fn components(mut self) -> Value {
        Value::Object(self.0.take_definitions(true))
    }
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})
}

pub fn document() -> Value {
    let mut s = Schemas::new();
    let job = s.of::<BootJob>();
    let job_json = s.json::<BootJob>();
    let user = json!([{"bearer": []}]);
    let runner = json!([{"bearer": []}]);
    let paths = paths(&mut s, &job, &job_json, &user, &runner);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "bootfarm",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Queue kernel boot jobs (BootJobs), follow their console and fetch their verdicts. \
                User endpoints need a user token, runner endpoints a runner token (`Authorization: Bearer TOKEN`) \
                when the operator was started with token files. Errors are `{\"error\": {\"message\", \"field\", \"code\"}}`."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": s.components()
        },
        "paths": paths
    })
}

fn paths(s: &mut Schemas, job: &Value, job_json: &Value, user: &Value, runner: &Value) -> Value {
    json!({
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: the store answers", "security": [],
                "responses": {"200": {"description": "ready"}, "503": s.error("store unreachable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition)", "security": [],
                "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document"}}}},
            "/api/v1/bootjobs": {
                "post": {"summary": "Submit a BootJob (JSON or YAML, as for kubectl apply)", "security": user,
                    "requestBody": {"required": true, "content": {
                        "application/json": job, "application/yaml": job}},
                    "responses": {
                        "201": {"description": "stored", "content": job_json},
                        "400": s.error("unreadable document"),
                        "401": s.error("missing or invalid token"),
                        "403": s.error("not a user token"),
                        "409": s.error("name taken"),
                        "413": s.error("body larger than 1 MiB"),
                        "415": s.error("not JSON or YAML"),
                        "422": s.error("invalid BootJob; `field` names the culprit")}},
                "get": {"summary": "List BootJobs, newest first", "security": user,
                    "parameters": [
                        {"name": "phase", "in": "query", "schema": {"type": "string",
                            "enum": ["Pending", "Queued", "Running", "Succeeded", "Failed", "Error", "Canceled"]}},
                        {"name": "labelSelector", "in": "query", "schema": {"type": "string"}, "example": "team=kernel"},
                        {"name": "limit", "in": "query", "description": format!(
                            "at most this many jobs, newest first (default {DEFAULT_LIST_LIMIT}); \
                             `metadata.truncated` says whether more match"),
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                                "default": DEFAULT_LIST_LIMIT}}],
                    "responses": {"200": {"description": "jobs", "content": s.json::<BootJobList>()},
                        "400": s.error("bad filter or limit")}}
            },
            "/api/v1/bootjobs/{name}": {
                "parameters": [name_param()],
                "get": {"summary": "One BootJob with its status", "security": user,
                    "responses": {"200": {"description": "the job", "content": job_json}, "404": s.error("no such job")}},
                "delete": {"summary": "Cancel a BootJob (its boot stops within seconds)", "security": user,
                    "responses": {"200": {"description": "the job, Canceled (or unchanged when already finished)", "content": job_json},
                        "404": s.error("no such job")}}
            },
            "/api/v1/bootjobs/{name}/log": {
                "parameters": [name_param(),
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                     "description": "stream new console output until the job finishes"}],
                "get": {"summary": "The serial console log", "security": user,
                    "responses": {"200": {"description": "console bytes", "content": {"text/plain": {}}},
                        "206": {"description": "the bytes of the `Range` asked for", "content": {"text/plain": {}}},
                        "204": {"description": "a follow (`Range: bytes=N-`, N at or past the end) of a job that has ended: nothing more"},
                        "404": s.error("no such job"),
                        "416": s.error("a range past the end (a follow may start exactly at the end)")}}
            },
            "/api/v1/bootjobs/{name}/result": {
                "parameters": [name_param()],
                "get": {"summary": "The runner's result document", "security": user,
                    "responses": {"200": {"description": "result", "content": s.json::<BootResult>()},
                        "404": s.error("no such job, or no result yet")}}
            },
            "/api/v1/bootjobs/{name}/junit": {
                "parameters": [name_param()],
                "get": {"summary": "The result as JUnit XML: a testsuite with the boot, one case per kernel issue (check-kernel-<kind>: <title>) and one per test", "security": user,
                    "responses": {"200": {"description": "JUnit XML", "content": {"application/xml": {}}},
                        "404": s.error("no such job, or no result yet")}}
            },
            "/api/v1/bootjobs/{name}/reproducer": {
                "parameters": [name_param()],
                "get": {"summary": "The boot as a self-contained shell script: fetches each artifact from its source, checks its sha256 and runs the same QEMU command with the console on stdio", "security": user,
                    "responses": {"200": {"description": "a POSIX shell script", "content": {"text/x-shellscript": {}}},
                        "404": s.error("no such job, no result yet, or a boot that never started QEMU")}}
            },
            "/api/v1/bootjobs/{name}/results.json": {
                "parameters": [name_param(),
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["bootfarm", "tuxrun"], "default": "bootfarm"},
                     "description": "`tuxrun`: the shape of TuxRun's results.json (suites of cases, a `lava` suite for the boot)"}],
                "get": {"summary": "The result document, or the same result as TuxRun writes it", "security": user,
                    "responses": {"200": {"description": "result", "content": {"application/json": {}}},
                        "400": s.error("unknown format"),
                        "404": s.error("no such job, or no result yet")}}
            },
            "/api/v1/plans": {
                "post": {"summary": "Submit a BootPlan: a matrix of kernels × arches × variants over shared defaults, expanded at once into BootJobs labelled bootfarm.dev/plan=NAME (all of them or none)", "security": user,
                    "requestBody": {"required": true, "content": {
                        "application/json": s.of::<BootPlan>(), "application/yaml": s.of::<BootPlan>()}},
                    "responses": {
                        "201": {"description": "the plan's jobs, created", "content": s.json::<PlanView>()},
                        "400": s.error("unreadable document"),
                        "409": s.error("a plan of that name, or a job of one of its names, exists"),
                        "413": s.error("body larger than 4 MiB"),
                        "415": s.error("not JSON or YAML"),
                        "422": s.error("invalid plan or plan job; `field` names the culprit")}}
            },
            "/api/v1/plans/{name}": {
                "parameters": [name_param()],
                "get": {"summary": "A plan's summary (counts by phase and result, the failing jobs) and each of its jobs in brief", "security": user,
                    "responses": {"200": {"description": "the plan", "content": s.json::<PlanView>()},
                        "404": s.error("no job carries the plan's label")}}
            },
            "/api/v1/compare": {
                "get": {"summary": "What regressed from baseline to candidate: jobs matched by plan key, tests by name, issues by fingerprint", "security": user,
                    "parameters": [
                        {"name": "baseline", "in": "query", "required": true, "schema": {"type": "string"},
                         "description": "a plan's name, or a label selector (k=v,...)"},
                        {"name": "candidate", "in": "query", "required": true, "schema": {"type": "string"}},
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "text"], "default": "json"}}],
                    "responses": {"200": {"description": "the comparison", "content": {
                            "application/json": s.of::<Comparison>(), "text/plain": {}}},
                        "400": s.error("a side missing, or a bad selector"),
                        "404": s.error("no job matches a side")}}
            },
            "/api/v1/pools": {
                "get": {"summary": "Each runner pool: runners by state, desired against actual, the queue it serves, and its last scale decisions (newest first)", "security": user,
                    "responses": {"200": {"description": "pools", "content": s.json::<super::PoolList>()}}}
            },
            "/api/v1/runner/claim": {"post": {"summary": "Long-poll for work (up to ~25 s)", "security": runner,
                "requestBody": s.body::<ClaimRequest>(),
                "responses": {"200": {"description": "a job under a lease", "content": s.json::<ClaimReply<BootJob>>()},
                    "204": {"description": "no work within the wait"},
                    "400": s.error("unreadable claim")}}},
            "/api/v1/runner/jobs/{name}/heartbeat": {"parameters": [name_param()],
                "post": {"summary": "Extend the lease; learn whether to stop", "security": runner,
                    "requestBody": s.body::<LeaseRequest>(),
                    "responses": {"200": {"description": "lease state", "content": s.json::<HeartbeatReply>()}}}},
            "/api/v1/runner/jobs/{name}/log": {"parameters": [name_param(),
                    {"name": "leaseId", "in": "query", "required": true, "schema": {"type": "string"}}],
                "post": {"summary": "Append console bytes (lease holder only)", "security": runner,
                    "requestBody": {"content": {"application/octet-stream": {}}},
                    "responses": {"204": {"description": "appended"}, "409": s.error("not the lease holder")}}},
            "/api/v1/runner/jobs/{name}/complete": {"parameters": [name_param()],
                "post": {"summary": "Post the verdict (once per lease)", "security": runner,
                    "requestBody": s.body::<CompleteRequest>(),
                    "responses": {"200": {"description": "recorded: finished, or requeued after an infrastructure error",
                            "content": s.json::<CompleteReply<BootJob>>()},
                        "409": s.error("stale lease: nothing recorded"),
                        "422": s.error("an impossible result; `field` names the culprit")}}},
            "/api/v1/runner/jobs/{name}/release": {"parameters": [name_param()],
                "post": {"summary": "Give the job back without a verdict (infrastructure failure, shutdown)",
                    "security": runner,
                    "requestBody": s.body::<ReleaseRequest>(),
                    "responses": {"200": {"description": "released (requeued or Error after maxAttempts)",
                        "content": s.json::<ReleaseReply>()},
                        "409": s.error("stale lease: nothing released")}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_to_a_generated_schema() {
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in &all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "BootJob",
            "BootJobList",
            "BootResult",
            "ClaimRequest",
            "HeartbeatReply",
            "ErrorReply",
        ] {
            assert!(
                schemas.contains_key(name),
                "{name} missing: {:?}",
                schemas.keys()
            );
        }
    }

    #[test]
    fn the_schemas_are_the_types_not_a_description_of_them() {
        let doc = document().to_string();
        // Spellings that exist only in the types: the arch enum, the error kinds, the
        // heartbeat states, a result field.
        for word in [
            "\"riscv64\"",
            "\"checksum_mismatch\"",
            "\"canceled\"",
            "\"leaseExpiresAt\"",
            "\"accel_reason\"",
            "\"runnerCreatedAt\"",
        ] {
            assert!(doc.contains(word), "{word} is not in the document");
        }
    }
}
