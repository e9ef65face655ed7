//! The client's calls to the operator's user API.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Duration;

/// Where the farm is and how to authenticate (shared by every client subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The operator's base URL.
    #[arg(
        long,
        env = "BOOTFARM_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// A file holding your user token (the first line without a `runner:` prefix; a `user:`
    /// prefix is allowed). The token itself can be given in BOOTFARM_TOKEN instead.
    #[arg(long, env = "BOOTFARM_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl Conn {
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Ok(t) = std::env::var("BOOTFARM_TOKEN") {
            if !t.trim().is_empty() {
                return Ok(Some(t.trim().to_string()));
            }
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        let token = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("runner:"))
            .map(|l| l.strip_prefix("user:").unwrap_or(l).trim().to_string())
            .next();
        match token {
            Some(t) => Ok(Some(t)),
            None => bail!("{} holds no user token", path.display()),
        }
    }
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An answer that is not 2xx: the server's message when it sent one.
fn failure(status: reqwest::StatusCode, body: &str) -> anyhow::Error {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = v
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().to_string());
    anyhow::anyhow!("HTTP {}: {message}", status.as_u16())
}

impl Api {
    pub fn new(conn: &Conn) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Api {
            http,
            base: format!("{}/api/v1", conn.server.trim_end_matches('/')),
            token: conn.token()?,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}/{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the operator at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(failure(status, &body))
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(r.timeout(Duration::from_secs(60))).await?;
        resp.json().await.context("reading the operator's answer")
    }

    pub async fn submit(
        &self,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<serde_json::Value> {
        self.json(
            self.req(reqwest::Method::POST, "bootjobs")
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    /// The newest jobs matching, as many as the server gives in one page, and whether more match.
    pub async fn list(
        &self,
        phase: Option<&str>,
        selector: Option<&str>,
    ) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
        let max = crate::api::MAX_LIST_LIMIT.to_string();
        let mut query = vec![("limit", max.as_str())];
        if let Some(p) = phase {
            query.push(("phase", p));
        }
        if let Some(s) = selector {
            query.push(("labelSelector", s));
        }
        let v = self
            .json(self.req(reqwest::Method::GET, "bootjobs").query(&query))
            .await?;
        let truncated = v["metadata"]["truncated"].as_bool().unwrap_or(false);
        Ok((
            v["items"].as_array().cloned().unwrap_or_default(),
            truncated,
        ))
    }

    pub async fn submit_plan(
        &self,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<crate::plans::PlanView> {
        let v = self
            .json(
                self.req(reqwest::Method::POST, "plans")
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body),
            )
            .await?;
        serde_json::from_value(v).context("reading the operator's answer")
    }

    pub async fn plan(&self, name: &str) -> anyhow::Result<crate::plans::PlanView> {
        let v = self
            .json(self.req(reqwest::Method::GET, &format!("plans/{name}")))
            .await?;
        serde_json::from_value(v).context("reading the operator's answer")
    }

    pub async fn pools(&self) -> anyhow::Result<serde_json::Value> {
        self.json(self.req(reqwest::Method::GET, "pools")).await
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.json(self.req(reqwest::Method::GET, &format!("bootjobs/{name}")))
            .await
    }

    pub async fn cancel(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.json(self.req(reqwest::Method::DELETE, &format!("bootjobs/{name}")))
            .await
    }

    pub async fn result(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.json(self.req(reqwest::Method::GET, &format!("bootjobs/{name}/result")))
            .await
    }

    /// The console log as a byte stream (following it until the job ends when `follow`).
    pub async fn log(&self, name: &str, follow: bool) -> anyhow::Result<reqwest::Response> {
        let mut r = self.req(reqwest::Method::GET, &format!("bootjobs/{name}/log"));
        if follow {
            r = r.query(&[("follow", "true")]);
        } else {
            r = r.timeout(Duration::from_secs(120));
        }
        self.send(r).await
    }
}
