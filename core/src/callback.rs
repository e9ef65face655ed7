//! Callbacks: where a job's or a plan's summary is POSTed when it ends, and how the receiver
//! checks it came from the farm (an HMAC-SHA256 of the body under a shared secret). Pure.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[cfg(feature = "schema")]
use schemars::JsonSchema;

/// `sha256=<hex HMAC-SHA256 of the body>`, GitHub's webhook convention.
pub const SIGNATURE_HEADER: &str = "X-Bootfarm-Signature-256";
/// `bootjob.finished` or `bootplan.finished`.
pub const EVENT_HEADER: &str = "X-Bootfarm-Event";
/// A unique id per delivery; retries of one delivery keep it (receivers can deduplicate).
pub const DELIVERY_HEADER: &str = "X-Bootfarm-Delivery";
pub const JOB_EVENT: &str = "bootjob.finished";
pub const PLAN_EVENT: &str = "bootplan.finished";
const MAX_URL: usize = 2048;

/// A callback: the URL, and the name of the secret that signs the body (a key of the operator's
/// callback Secret in Kubernetes, a file of its `--callback-secret-dir` in standalone mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CallbackRef {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// The problem with a callback, for the field `at` (`spec.callback`).
pub fn check(cb: &CallbackRef) -> Result<(), (String, String)> {
    let field = |f: &str, m: String| Err((f.to_string(), m));
    if cb.url.len() > MAX_URL {
        return field("url", format!("longer than {MAX_URL} bytes"));
    }
    let url = match url::Url::parse(&cb.url) {
        Ok(u) => u,
        Err(e) => return field("url", format!("{:?} is not a URL: {e}", cb.url)),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return field(
            "url",
            format!(
                "scheme {:?}: callbacks are http or https only",
                url.scheme()
            ),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return field("url", "the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return field(
            "url",
            "credentials in the URL would be visible to anyone who can read the job; sign with \
             secretName instead"
                .into(),
        );
    }
    if let Some(s) = &cb.secret_name {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !s.starts_with('.');
        if !ok {
            return field(
                "secretName",
                format!("{s:?} is not a secret name ([A-Za-z0-9._-], not starting with '.')"),
            );
        }
    }
    Ok(())
}

/// The signature header's value for `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb(url: &str, secret: Option<&str>) -> CallbackRef {
        CallbackRef {
            url: url.into(),
            secret_name: secret.map(str::to_string),
        }
    }

    #[test]
    fn only_plain_http_urls_and_file_like_secret_names_pass() {
        assert!(check(&cb("https://ci.example/hook?x=1", Some("team-a.key"))).is_ok());
        assert!(check(&cb("http://127.0.0.1:9/hook", None)).is_ok());
        for (bad, field) in [
            (cb("ftp://ci.example/hook", None), "url"),
            (cb("file:///etc/passwd", None), "url"),
            (cb("not a url", None), "url"),
            (cb("https://user:pw@ci.example/", None), "url"),
            (
                cb(&format!("https://ci.example/{}", "a".repeat(MAX_URL)), None),
                "url",
            ),
            (
                cb("https://ci.example/", Some("../etc/shadow")),
                "secretName",
            ),
            (cb("https://ci.example/", Some(".hidden")), "secretName"),
            (cb("https://ci.example/", Some("")), "secretName"),
        ] {
            assert_eq!(check(&bad).unwrap_err().0, field, "{bad:?}");
        }
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
