//! The OpenAPI 3 description of the HTTP API, served at `/api/v1/openapi.json`. Written by hand
//! (a test checks every route of the router is described here).

use super::jobs::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn lease_body(extra: Value) -> Value {
    let mut props = json!({"leaseId": {"type": "string"}});
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({
        "required": true,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["leaseId"], "properties": props
        }}}
    })
}

pub fn document() -> Value {
    let job_ref = json!({"$ref": "#/components/schemas/BootJob"});
    let job_json = json!({"application/json": {"schema": job_ref}});
    let user = json!([{"bearer": []}]);
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
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "field": {"type": "string"}, "code": {"type": "integer"}
                }}}},
                "BootJob": {"type": "object", "description": "A bootfarm.dev/v1alpha1 BootJob (see the CRD for the full schema).",
                    "required": ["apiVersion", "kind", "metadata", "spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "enum": ["bootfarm.dev/v1alpha1"]},
                        "kind": {"type": "string", "enum": ["BootJob"]},
                        "metadata": {"type": "object", "properties": {
                            "name": {"type": "string"}, "generateName": {"type": "string"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                        "spec": {"type": "object"},
                        "status": {"type": "object"}
                    }},
                "BootJobList": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string", "enum": ["BootJobList"]},
                    "metadata": {"type": "object", "properties": {
                        "limit": {"type": "integer", "description": "the page size applied"},
                        "truncated": {"type": "boolean", "description": "more jobs match than were returned"}}},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/BootJob"}}}},
                "BootResult": {"type": "object", "description": "The runner's result document, schema bootfarm.result/v1."},
                "Claim": {"type": "object", "properties": {
                    "job": {"$ref": "#/components/schemas/BootJob"}, "leaseId": {"type": "string"},
                    "attempt": {"type": "integer"}, "leaseTtlSeconds": {"type": "integer"}}},
                "LeaseState": {"type": "object", "properties": {
                    "state": {"type": "string", "enum": ["active", "canceled", "lost"]},
                    "leaseExpiresAt": {"type": "string", "format": "date-time"}}}
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [],
                "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: the store answers", "security": [],
                "responses": {"200": {"description": "ready"}, "503": error_response("store unreachable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition)", "security": [],
                "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}}}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document"}}}},
            "/api/v1/bootjobs": {
                "post": {"summary": "Submit a BootJob (JSON or YAML, as for kubectl apply)", "security": user,
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": job_ref}, "application/yaml": {"schema": job_ref}}},
                    "responses": {
                        "201": {"description": "stored", "content": job_json},
                        "400": error_response("unreadable document"),
                        "401": error_response("missing or invalid token"),
                        "403": error_response("not a user token"),
                        "409": error_response("name taken"),
                        "413": error_response("body larger than 1 MiB"),
                        "415": error_response("not JSON or YAML"),
                        "422": error_response("invalid BootJob; `field` names the culprit")}},
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
                    "responses": {"200": {"description": "jobs", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/BootJobList"}}}},
                        "400": error_response("bad filter or limit")}}
            },
            "/api/v1/bootjobs/{name}": {
                "parameters": [name_param()],
                "get": {"summary": "One BootJob with its status", "security": user,
                    "responses": {"200": {"description": "the job", "content": job_json}, "404": error_response("no such job")}},
                "delete": {"summary": "Cancel a BootJob (its boot stops within seconds)", "security": user,
                    "responses": {"200": {"description": "the job, Canceled (or unchanged when already finished)", "content": job_json},
                        "404": error_response("no such job")}}
            },
            "/api/v1/bootjobs/{name}/log": {
                "parameters": [name_param(),
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                     "description": "stream new console output until the job finishes"}],
                "get": {"summary": "The serial console log", "security": user,
                    "responses": {"200": {"description": "console bytes", "content": {"text/plain": {}}},
                        "404": error_response("no such job")}}
            },
            "/api/v1/bootjobs/{name}/result": {
                "parameters": [name_param()],
                "get": {"summary": "The runner's result document", "security": user,
                    "responses": {"200": {"description": "result", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/BootResult"}}}},
                        "404": error_response("no such job, or no result yet")}}
            },
            "/api/v1/runner/claim": {"post": {"summary": "Long-poll for work (up to ~25 s)", "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object",
                    "required": ["runnerId"], "properties": {
                        "runnerId": {"type": "string"}, "pool": {"type": "string"},
                        "waitSeconds": {"type": "integer", "description": "long-poll bound (capped by the server's)"},
                        "runnerCreatedAt": {"type": "string", "format": "date-time",
                            "description": "first claim only: when the runner's pod/process was created"},
                        "arches": {"type": "array", "items": {"type": "string"}}}}}}},
                "responses": {"200": {"description": "a job under a lease", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Claim"}}}},
                    "204": {"description": "no work within the wait"}}}},
            "/api/v1/runner/jobs/{name}/heartbeat": {"parameters": [name_param()],
                "post": {"summary": "Extend the lease; learn whether to stop", "security": [{"bearer": []}],
                    "requestBody": lease_body(json!({})),
                    "responses": {"200": {"description": "lease state", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/LeaseState"}}}}}}},
            "/api/v1/runner/jobs/{name}/log": {"parameters": [name_param(),
                    {"name": "leaseId", "in": "query", "required": true, "schema": {"type": "string"}}],
                "post": {"summary": "Append console bytes (lease holder only)", "security": [{"bearer": []}],
                    "requestBody": {"content": {"application/octet-stream": {}}},
                    "responses": {"204": {"description": "appended"}, "409": error_response("not the lease holder")}}},
            "/api/v1/runner/jobs/{name}/complete": {"parameters": [name_param()],
                "post": {"summary": "Post the verdict (once per lease)", "security": [{"bearer": []}],
                    "requestBody": lease_body(json!({"result": {"$ref": "#/components/schemas/BootResult"}})),
                    "responses": {"200": {"description": "recorded (finished, or requeued after an infrastructure error)"},
                        "409": error_response("stale lease: nothing recorded")}}},
            "/api/v1/runner/jobs/{name}/release": {"parameters": [name_param()],
                "post": {"summary": "Give the job back without a verdict (infrastructure failure, shutdown)",
                    "security": [{"bearer": []}],
                    "requestBody": lease_body(json!({"reason": {"type": "string"}})),
                    "responses": {"200": {"description": "released (requeued or Error after maxAttempts)"}}}}
        }
    })
}
