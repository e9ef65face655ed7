//! What a runner may fetch. A person's own `bootfarm-runner boot` fetches anything its user can
//! read (they own the machine). In the farm the job's author is not the machine's owner, so:
//! local files only from the directories the farm allows (checked on the file actually opened,
//! symlinks resolved), and downloads only from public addresses (checked on every address the
//! connection uses, after DNS and on every redirect), unless a range is allowed explicitly.

use bootfarm_core::netpolicy::{NetPolicy, Refused};
use bootfarm_core::spec::LocalDirs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where artifacts may come from.
#[derive(Debug, Clone, Default)]
pub enum FetchPolicy {
    /// Anything (a person's own boot).
    #[default]
    Unrestricted,
    /// The farm's rules.
    Farm {
        /// Canonical allowed directories (symlinks resolved at start).
        local: LocalDirs,
        net: NetPolicy,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("allowed artifact directory {dir}: {reason}")]
pub struct PolicyError {
    pub dir: String,
    pub reason: String,
}

impl FetchPolicy {
    /// The farm's policy; each allowed directory must exist (it is resolved to its real path, so
    /// that the real path of an opened file can be compared with it).
    pub fn farm(dirs: &[PathBuf], net: NetPolicy) -> Result<FetchPolicy, PolicyError> {
        let mut canonical = Vec::with_capacity(dirs.len());
        for d in dirs {
            let real = std::fs::canonicalize(d).map_err(|e| PolicyError {
                dir: d.display().to_string(),
                reason: e.to_string(),
            })?;
            if !real.is_dir() {
                return Err(PolicyError {
                    dir: d.display().to_string(),
                    reason: "not a directory".into(),
                });
            }
            canonical.push(real);
        }
        let local = LocalDirs::new(canonical).map_err(|e| PolicyError {
            dir: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            reason: e.0,
        })?;
        Ok(FetchPolicy::Farm { local, net })
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, FetchPolicy::Farm { .. })
    }

    pub fn local_dirs(&self) -> Option<&LocalDirs> {
        match self {
            FetchPolicy::Unrestricted => None,
            FetchPolicy::Farm { local, .. } => Some(local),
        }
    }

    pub fn net(&self) -> Option<&NetPolicy> {
        match self {
            FetchPolicy::Unrestricted => None,
            FetchPolicy::Farm { net, .. } => Some(net),
        }
    }
}

/// The error a refused address travels in through reqwest's connector and redirect policy, so
/// the download can tell a refusal (final) from a network failure (retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefusedAddress(pub Refused);

/// reqwest's DNS resolver for the farm: resolves with the system resolver, then keeps only the
/// addresses the policy allows. reqwest connects only to what this returns, so a name that
/// resolves differently a second time (DNS rebinding) cannot get around the check.
pub struct PolicyResolver {
    pub net: Arc<NetPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let net = self.net.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match net.check(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        first_refusal.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = match first_refusal {
                    Some(r) => Box::new(RefusedAddress(r)),
                    None => format!("{host}: no addresses").into(),
                };
                return Err(err);
            }
            let iter: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

/// The refusal hidden in an error's source chain, if any.
pub fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<RefusedAddress>() {
            return Some(&r.0);
        }
        cur = e.source();
    }
    None
}

/// Whether `url` may be requested (its host checked when it is an IP literal; names are checked
/// by [`PolicyResolver`] when connecting).
pub fn check_url(net: &NetPolicy, url: &reqwest::Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => std::net::IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => std::net::IpAddr::V6(a),
        _ => return Ok(()),
    };
    net.check(ip)
}
