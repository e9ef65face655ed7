//! Turns a submitted BootJob document (JSON or YAML, as for `kubectl apply`) into a `BootJob`,
//! or an error that names the offending field. Pure: no store, no I/O.
//!
//! YAML aliases are expanded by the parser, so a tiny "billion laughs" document can describe an
//! enormous tree. Every document is first read into a JSON value under a node budget, which bounds
//! the work whatever the aliases do; only then is it checked against the schema.

use super::error::ApiError;
use bootfarm_core::plan::{BootPlan, BootPlanSpec};
use bootfarm_core::spec::{BootJob, BootJobSpec, API_VERSION};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;
use std::sync::LazyLock;

/// Upper bound on nodes (scalars, sequences, maps) in one document, aliases expanded. A real
/// BootJob has well under a hundred.
pub const MAX_NODES: usize = 10_000;
/// Nesting bound; a BootJob is four levels deep.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// The body's format from its Content-Type; anything else is a 415 that lists what is accepted.
pub fn format_of(content_type: Option<&str>) -> Result<Format, ApiError> {
    let Some(ct) = content_type else {
        return Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: send application/json or application/yaml".into(),
        ));
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Format::Yaml),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: send application/json or application/yaml \
             (also accepted: application/x-yaml, text/yaml)"
        ))),
    }
}

struct Budget {
    nodes: Cell<usize>,
    limit: usize,
}

impl Budget {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        let left = self.nodes.get();
        if left == 0 {
            return Err(E::custom(format!(
                "document too large: more than {} values (YAML aliases are expanded; do not \
                 use anchors to repeat large parts)",
                self.limit
            )));
        }
        self.nodes.set(left - 1);
        Ok(())
    }
}

/// Deserializes any self-describing document into a JSON value, spending one unit of budget per node.
struct Bounded<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "document nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.budget.take::<D::Error>()?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Bounded {
            budget: self.budget,
            depth: self.depth,
        }
        .deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded {
            budget: self.budget,
            depth: self.depth + 1,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Bounded {
            budget: self.budget,
            depth: self.depth + 1,
        })? {
            let key = match key {
                Value::String(s) => s,
                other => {
                    return Err(de::Error::custom(format!(
                        "map keys must be strings, got {other}"
                    )))
                }
            };
            let value = map.next_value_seed(Bounded {
                budget: self.budget,
                depth: self.depth + 1,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Reads the body into a JSON value under the node budget.
pub fn to_value(format: Format, body: &[u8]) -> Result<Value, ApiError> {
    to_value_within(format, body, MAX_NODES)
}

/// Reads the body into a JSON value of at most `nodes` nodes (aliases expanded).
pub fn to_value_within(format: Format, body: &[u8], nodes: usize) -> Result<Value, ApiError> {
    let budget = Budget {
        nodes: Cell::new(nodes),
        limit: nodes,
    };
    let seed = Bounded {
        budget: &budget,
        depth: 0,
    };
    let parsed = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            seed.deserialize(&mut de)
                .and_then(|v| de.end().map(|()| v))
                .map_err(|e| e.to_string())
        }
        Format::Yaml => seed
            .deserialize(serde_yaml_ng::Deserializer::from_slice(body))
            .map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| {
        ApiError::bad_request(format!("unreadable {} document: {e}", format_name(format)))
    })
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Json => "JSON",
        Format::Yaml => "YAML",
    }
}

/// The first field of `value` (at any depth) that `schema` does not know, as a path under
/// `path`: a typo (`spec.kernel.sha265`) is refused instead of silently ignored. `root` holds
/// the `$defs` that `$ref`s point into.
fn unknown_field(value: &Value, schema: &Value, root: &Value, path: &str) -> Option<String> {
    let schema = resolve(schema, root);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return None;
    }
    // `Option<T>` and enums come as alternatives: the object-shaped one describes an object.
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let fits = |alt: &Value| {
                let alt = resolve(alt, root);
                match value {
                    Value::Object(_) => alt.get("properties").is_some(),
                    Value::Array(_) => alt.get("items").is_some(),
                    _ => false,
                }
            };
            if let Some(alt) = alts.iter().find(|a| fits(a)) {
                return unknown_field(value, alt, root, path);
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, v) in map {
                let sub = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => {
                        if let Some(f) = unknown_field(v, s, root, &sub) {
                            return Some(f);
                        }
                    }
                    (None, Some(s)) if s.is_object() => {
                        if let Some(f) = unknown_field(v, s, root, &sub) {
                            return Some(f);
                        }
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if props.is_some() => return Some(sub),
                    (None, _) => {}
                }
            }
            None
        }
        Value::Array(items) => {
            let item_schema = schema.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| unknown_field(v, item_schema, root, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// Follows a local `$ref` (`#/$defs/Name`); anything else is returned as is.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut cur = schema;
    for _ in 0..8 {
        let Some(r) = cur.get("$ref").and_then(Value::as_str) else {
            return cur;
        };
        let Some(name) = r
            .strip_prefix("#/$defs/")
            .or_else(|| r.strip_prefix("#/definitions/"))
        else {
            return cur;
        };
        match root
            .get("$defs")
            .or_else(|| root.get("definitions"))
            .and_then(|d| d.get(name))
        {
            Some(next) => cur = next,
            None => return cur,
        }
    }
    cur
}

/// The known fields of the spec, for the message.
fn known_fields(schema: &Value, root: &Value, path: &str) -> Vec<String> {
    let mut node = resolve(schema, root);
    for part in path.split('.').skip(1) {
        let Some(next) = node
            .get("properties")
            .and_then(|p| p.get(part.split('[').next().unwrap_or(part)))
        else {
            break;
        };
        node = resolve(next, root);
        for key in ["anyOf", "oneOf"] {
            if let Some(alt) = node.get(key).and_then(Value::as_array).and_then(|alts| {
                alts.iter()
                    .map(|a| resolve(a, root))
                    .find(|a| a.get("properties").is_some())
            }) {
                node = alt;
            }
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The document's metadata without what the server owns (whatever a client sends there is not
/// ours to keep); a submitted status is dropped too.
fn client_metadata(obj: &mut Map<String, Value>) -> Result<&mut Map<String, Value>, ApiError> {
    obj.remove("status");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| ApiError::invalid("metadata", "metadata must be an object"))?;
    for owned in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "managedFields",
    ] {
        meta.remove(owned);
    }
    Ok(meta)
}

/// The document as an object of `kind` in bootfarm's API version.
fn check_header<'d>(
    doc: &'d mut Value,
    kind: &str,
) -> Result<&'d mut Map<String, Value>, ApiError> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(ApiError::invalid(
            "",
            format!("the document must be an object (a {kind})"),
        ));
    };
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "apiVersion",
                format!("apiVersion must be {API_VERSION:?}, got {other:?}"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "apiVersion",
                format!("apiVersion is required ({API_VERSION:?})"),
            ))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "kind",
                format!("kind must be {kind:?}, got {other:?}"),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "kind",
                format!("kind is required ({kind:?})"),
            ))
        }
    }
    Ok(obj)
}

/// The first field of `spec` its type's schema does not know, as an error naming the known ones.
fn check_known_fields(spec: &Value, schema: &Value) -> Result<(), ApiError> {
    if let Some(field) = unknown_field(spec, schema, schema, "spec") {
        let parent = field.rsplit_once('.').map_or("spec", |(p, _)| p);
        return Err(ApiError::invalid(
            field.clone(),
            format!(
                "{field}: unknown field (known fields of {parent}: {})",
                known_fields(schema, schema, parent).join(", ")
            ),
        ));
    }
    Ok(())
}

static BOOTJOB_SPEC_SCHEMA: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(BootJobSpec)).unwrap_or_default());
static BOOTPLAN_SPEC_SCHEMA: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(BootPlanSpec)).unwrap_or_default());

/// Deserializes a checked document, naming the field of the first error.
fn typed<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let field = e.path().to_string();
        let message = if field == "." {
            e.inner().to_string()
        } else {
            format!("{field}: {}", e.inner())
        };
        ApiError::invalid(if field == "." { String::new() } else { field }, message)
    })
}

/// Checks a submitted BootPlan document and builds the plan from it: `metadata.name` is required
/// (it names every job and labels them), the spec's fields are checked as a BootJob's are; the
/// defaults and overrides are checked on the expanded jobs ([`plan_jobs`]).
pub fn bootplan_from_value(mut doc: Value) -> Result<BootPlan, ApiError> {
    let obj = check_header(&mut doc, "BootPlan")?;
    let meta = client_metadata(obj)?;
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if bootfarm_core::names::is_dns_label(n) => {}
        Some(n) => {
            return Err(ApiError::invalid(
                "metadata.name",
                format!(
                    "metadata.name {:?} is not a valid plan name: a lowercase DNS label (letters, \
                     digits and '-', at most 63), as it is also a label value on every job",
                    n.chars().take(64).collect::<String>()
                ),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "metadata.name",
                "metadata.name is required (a plan's name labels its jobs)",
            ))
        }
    }
    let spec = obj
        .get("spec")
        .ok_or_else(|| ApiError::invalid("spec", "spec is required"))?;
    if !spec.is_object() {
        return Err(ApiError::invalid("spec", "spec must be an object"));
    }
    check_known_fields(spec, &BOOTPLAN_SPEC_SCHEMA)?;
    typed(doc)
}

/// The BootJobs a plan expands to, each checked as a submitted BootJob would be; the first
/// problem names the matrix cell and the field.
pub fn plan_jobs(name: &str, spec: &BootPlanSpec) -> Result<Vec<BootJob>, ApiError> {
    let planned =
        bootfarm_core::plan::expand(name, spec).map_err(|errs| ApiError::fields(&errs))?;
    planned
        .into_iter()
        .map(|j| {
            let doc = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "BootJob",
                "metadata": {"name": j.name, "labels": j.labels, "annotations": j.annotations},
                "spec": j.spec,
            });
            bootjob_from_value(doc).map_err(|e| match e {
                ApiError::Invalid { message, field } => ApiError::Invalid {
                    message: format!("plan job {} ({}): {message}", j.name, j.key),
                    field,
                },
                other => other,
            })
        })
        .collect()
}

/// Checks a submitted document and builds the BootJob from it. It has `metadata.name`, or only
/// `metadata.generateName` (the store then generates the name). Any submitted status is dropped.
pub fn bootjob_from_value(mut doc: Value) -> Result<BootJob, ApiError> {
    let obj = check_header(&mut doc, "BootJob")?;
    let meta = client_metadata(obj)?;
    // With only `generateName`, the store picks the name (and retries on a collision).
    match (meta.get("name"), meta.get("generateName")) {
        (Some(Value::String(n)), _) if !n.is_empty() => check_name(n)?,
        (Some(v), _) if !v.is_null() && !v.as_str().is_some_and(str::is_empty) => {
            return Err(ApiError::invalid(
                "metadata.name",
                "metadata.name must be a string",
            ))
        }
        (_, Some(Value::String(prefix))) if !prefix.is_empty() => {
            check_generate_name(prefix)?;
            meta.remove("name");
        }
        _ => {
            return Err(ApiError::invalid(
                "metadata.name",
                "metadata.name or metadata.generateName is required",
            ))
        }
    }

    let spec = obj
        .get("spec")
        .ok_or_else(|| ApiError::invalid("spec", "spec is required"))?;
    let Some(spec_obj) = spec.as_object() else {
        return Err(ApiError::invalid("spec", "spec must be an object"));
    };
    let _ = spec_obj;
    check_known_fields(spec, &BOOTJOB_SPEC_SCHEMA)?;
    typed(doc)
}

/// Kubernetes object names: a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, at most 253).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if !bootfarm_core::names::is_dns_subdomain(name) {
        return Err(ApiError::invalid(
            "metadata.name",
            format!(
                "metadata.name {:?} is not a valid name: dot-separated labels of lowercase \
                 letters, digits and '-', each starting and ending with a letter or digit, at \
                 most 253 characters",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// The random suffix the embedded store appends to a `generateName`.
const GENERATED_SUFFIX: usize = 5;

/// A `generateName` prefix that makes valid names once a suffix is appended.
fn check_generate_name(prefix: &str) -> Result<(), ApiError> {
    if !bootfarm_core::names::is_generate_name_prefix(prefix, GENERATED_SUFFIX) {
        return Err(ApiError::invalid(
            "metadata.generateName",
            format!(
                "metadata.generateName {:?} is not a valid name prefix: lowercase letters, digits, \
                 '-' and '.', starting with a letter or digit, at most {} characters",
                prefix.chars().take(64).collect::<String>(),
                bootfarm_core::names::MAX_SUBDOMAIN - GENERATED_SUFFIX
            ),
        ));
    }
    Ok(())
}

/// Parses a submitted body of the given Content-Type into a BootJob.
pub fn parse_bootjob(content_type: Option<&str>, body: &[u8]) -> Result<BootJob, ApiError> {
    let format = format_of(content_type)?;
    let value = to_value(format, body)?;
    bootjob_from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: bootfarm.dev/v1alpha1
kind: BootJob
metadata:
  name: hello
  labels: {team: kernel}
spec:
  arch: x86_64
  kernel: {url: "file:///k"}
  bootArgs: console=ttyS0
"#;

    fn err_of(r: Result<BootJob, ApiError>) -> (String, Option<String>) {
        match r.unwrap_err() {
            ApiError::Invalid { message, field } | ApiError::BadRequest { message, field } => {
                (message, field)
            }
            other => (other.to_string(), None),
        }
    }

    #[test]
    fn yaml_and_json_documents_parse() {
        let job = parse_bootjob(Some("application/yaml"), GOOD.as_bytes()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("hello"));
        assert_eq!(job.spec.boot_args.as_deref(), Some("console=ttyS0"));
        let json = serde_json::to_vec(&job).unwrap();
        let again = parse_bootjob(Some("application/json; charset=utf-8"), &json).unwrap();
        assert_eq!(again.spec, job.spec);
    }

    #[test]
    fn unknown_arch_names_the_field() {
        let doc = GOOD.replace("arch: x86_64", "arch: mips");
        let (msg, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.arch"));
        assert!(
            msg.starts_with("spec.arch: unknown variant `mips`"),
            "{msg}"
        );
    }

    #[test]
    fn negative_timeout_names_the_field() {
        let doc = GOOD.replace("bootArgs: console=ttyS0", "timeouts: {boot: -5}");
        let (msg, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.timeouts.boot"), "{msg}");
    }

    #[test]
    fn missing_kernel_is_reported() {
        let doc = GOOD.replace("  kernel: {url: \"file:///k\"}\n", "");
        let (msg, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert!(msg.contains("missing field `kernel`"), "{msg}");
        assert_eq!(field.as_deref(), Some("spec"));
    }

    #[test]
    fn a_misspelt_field_is_refused() {
        let doc = GOOD.replace("bootArgs:", "bootArg:");
        let (msg, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.bootArg"), "{msg}");
    }

    #[test]
    fn a_misspelt_nested_field_is_refused_too() {
        let doc = GOOD.replace(
            "kernel: {url: \"file:///k\"}",
            "kernel: {url: \"file:///k\", sha265: x}",
        );
        let (msg, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.kernel.sha265"), "{msg}");
        assert!(
            msg.contains("url, sha256") || msg.contains("sha256, url"),
            "{msg}"
        );
        let doc = GOOD.replace("bootArgs: console=ttyS0", "timeouts: {boot: 5, totl: 9}");
        let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.timeouts.totl"));
        let doc = GOOD.replace("bootArgs: console=ttyS0", "initrd: {url: x, extra: 1}");
        let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("spec.initrd.extra"));
    }

    #[test]
    fn names_with_empty_labels_are_refused() {
        for bad in ["a..b", "a.-b", ".a", "a."] {
            let doc = GOOD.replace("name: hello", &format!("name: \"{bad}\""));
            let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
            assert_eq!(field.as_deref(), Some("metadata.name"), "{bad}");
        }
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let doc = GOOD.replace("  name: hello\n", "");
        let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("metadata.name"));
        let doc = GOOD.replace("  name: hello\n", "  generateName: boot-\n");
        let job = parse_bootjob(Some("text/yaml"), doc.as_bytes()).unwrap();
        assert_eq!(job.metadata.name, None, "the store generates the name");
        assert_eq!(job.metadata.generate_name.as_deref(), Some("boot-"));
        let doc = GOOD.replace("  name: hello\n", "  generateName: Boot_\n");
        let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("metadata.generateName"));
        let doc = GOOD.replace("name: hello", "name: Hello_World");
        let (_, field) = err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()));
        assert_eq!(field.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn wrong_kind_or_version_is_refused() {
        let doc = GOOD.replace("kind: BootJob", "kind: Pod");
        assert_eq!(
            err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()))
                .1
                .as_deref(),
            Some("kind")
        );
        let doc = GOOD.replace("bootfarm.dev/v1alpha1", "v1");
        assert_eq!(
            err_of(parse_bootjob(Some("text/yaml"), doc.as_bytes()))
                .1
                .as_deref(),
            Some("apiVersion")
        );
    }

    #[test]
    fn content_types() {
        assert!(matches!(
            format_of(Some("text/plain")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            format_of(None),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        assert_eq!(format_of(Some("Application/X-YAML")).unwrap(), Format::Yaml);
    }

    /// Nine levels of nine aliases: 9^9 nodes if expanded. Must fail fast with a clear message.
    #[test]
    fn yaml_bomb_is_bounded() {
        let bomb = yaml_bomb();
        let started = std::time::Instant::now();
        let (msg, _) = err_of(parse_bootjob(Some("application/yaml"), bomb.as_bytes()));
        assert!(msg.contains("too large"), "{msg}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    pub fn yaml_bomb() -> String {
        let mut s = String::from(
            "apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata: {name: bomb}\n",
        );
        s.push_str(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            s.push_str(&format!("{cur}: &{cur} [{refs}]\n"));
        }
        s.push_str("spec: {arch: x86_64, kernel: {url: x}, commands: *i}\n");
        s
    }
}
