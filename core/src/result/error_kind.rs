//! `error.kind` of a result whose verdict is `error`: why the infrastructure, not the kernel, failed.
//! The spellings are a contract (`snake_case`, as JSON has always carried them).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such file or URL, or a scheme that cannot be fetched.
    ArtifactMissing,
    /// There, but not readable (permissions, not a regular file).
    ArtifactUnreadable,
    /// Refused by the farm's artifact policy (outside the allowed directories or networks).
    ArtifactRefused,
    /// The download failed or timed out (HTTP status, connection, body).
    DownloadFailed,
    /// The artifact's sha256 is not the one the job gave (or the one given is not a sha256).
    ChecksumMismatch,
    /// Larger than the farm accepts.
    ArtifactTooLarge,
    /// The architecture's qemu-system binary is not installed.
    QemuMissing,
    /// QEMU refused to start or died.
    QemuFailed,
    /// KVM was required and is not usable.
    KvmUnavailable,
    /// The total timeout passed outside the boot (fetching, starting).
    Timeout,
    /// The boot was stopped (cancel, SIGTERM).
    Interrupted,
    /// The job cannot be run as written (resources, a spec this runner cannot read).
    InvalidJob,
    /// A bug or a local failure of the runner.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::ArtifactMissing,
        ErrorKind::ArtifactUnreadable,
        ErrorKind::ArtifactRefused,
        ErrorKind::DownloadFailed,
        ErrorKind::ChecksumMismatch,
        ErrorKind::ArtifactTooLarge,
        ErrorKind::QemuMissing,
        ErrorKind::QemuFailed,
        ErrorKind::KvmUnavailable,
        ErrorKind::Timeout,
        ErrorKind::Interrupted,
        ErrorKind::InvalidJob,
        ErrorKind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ArtifactMissing => "artifact_missing",
            ErrorKind::ArtifactUnreadable => "artifact_unreadable",
            ErrorKind::ArtifactRefused => "artifact_refused",
            ErrorKind::DownloadFailed => "download_failed",
            ErrorKind::ChecksumMismatch => "checksum_mismatch",
            ErrorKind::ArtifactTooLarge => "artifact_too_large",
            ErrorKind::QemuMissing => "qemu_missing",
            ErrorKind::QemuFailed => "qemu_failed",
            ErrorKind::KvmUnavailable => "kvm_unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::InvalidJob => "invalid_job",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether another attempt would fail the same way: the job's own inputs are wrong, so a
    /// retry only delays the answer. Everything else may be the machine's passing trouble.
    pub fn is_permanent(self) -> bool {
        match self {
            ErrorKind::ArtifactMissing
            | ErrorKind::ArtifactUnreadable
            | ErrorKind::ArtifactRefused
            | ErrorKind::ChecksumMismatch
            | ErrorKind::ArtifactTooLarge
            | ErrorKind::InvalidJob => true,
            ErrorKind::DownloadFailed
            | ErrorKind::QemuMissing
            | ErrorKind::QemuFailed
            | ErrorKind::KvmUnavailable
            | ErrorKind::Timeout
            | ErrorKind::Interrupted
            | ErrorKind::Internal => false,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_spelling_is_the_contract_spelling() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, serde_json::Value::String(kind.as_str().into()));
            let back: ErrorKind = serde_json::from_value(json).expect("parses");
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        assert!(serde_json::from_str::<ErrorKind>("\"gremlins\"").is_err());
    }

    #[test]
    fn only_the_jobs_own_inputs_are_permanent() {
        let permanent: Vec<&str> = ErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_permanent())
            .map(ErrorKind::as_str)
            .collect();
        assert_eq!(
            permanent,
            [
                "artifact_missing",
                "artifact_unreadable",
                "artifact_refused",
                "checksum_mismatch",
                "artifact_too_large",
                "invalid_job"
            ]
        );
    }
}
