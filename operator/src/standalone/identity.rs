//! Who local runners (and so QEMU) run as. An operator started as root must not boot a
//! stranger's kernel as root: its runners run as an unprivileged user (`--runner-user`,
//! default `bootfarm`, created when missing) whose only writable places are its cache and work
//! directory. The data directory (job database, logs, results) stays the operator's alone.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The default unprivileged user for runners of an operator started as root.
pub const DEFAULT_USER: &str = "bootfarm";

/// A user runners run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: only the group of `/dev/kvm`, when there is one.
    pub groups: Vec<u32>,
}

/// Looks `name` up, creating it as a system user without a home or shell when it is missing.
pub fn ensure_user(name: &str) -> anyhow::Result<RunnerUser> {
    if !is_user_name(name) {
        bail!("--runner-user {name:?} is not a user name");
    }
    let lookup =
        || nix::unistd::User::from_name(name).with_context(|| format!("looking up {name}"));
    if let Some(u) = lookup()? {
        return Ok(runner_user(name, &u));
    }
    // Two farms starting at once would both add the user: concurrent useradds can each write
    // /etc/passwd, and one farm is left chowning its cache to a uid that no longer exists.
    let _serialized = useradd_lock()?;
    let user = match lookup()? {
        Some(u) => u,
        None => {
            tracing::info!(user = name, "Creating the unprivileged runner user");
            let status = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .status()
                .context("running useradd (package passwd)")?;
            if !status.success() {
                bail!("useradd {name} failed ({status})");
            }
            nix::unistd::User::from_name(name)?
                .with_context(|| format!("{name} still missing after useradd"))?
        }
    };
    Ok(runner_user(name, &user))
}

fn runner_user(name: &str, user: &nix::unistd::User) -> RunnerUser {
    RunnerUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: kvm_group().into_iter().collect(),
    }
}

/// How long a farm waits for another one's useradd.
const USERADD_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An exclusive lock held while the runner user is looked up and created, across processes.
fn useradd_lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join("bootfarm-useradd.lock");
    let deadline = std::time::Instant::now() + USERADD_LOCK_WAIT;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, e)) => bail!("locking {}: {e}", path.display()),
        }
    }
}

/// The group owning `/dev/kvm`, so a runner may use KVM where it works.
fn kvm_group() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata("/dev/kvm").ok()?;
    // A device owned by root's group grants nothing worth having.
    Some(md.gid()).filter(|&g| g != 0)
}

fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !s.starts_with('-')
}

/// A directory owned by `user` with mode 0700 (created when missing).
pub fn private_dir(path: &Path, user: &RunnerUser) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .with_context(|| format!("chown {} to {}", path.display(), user.name))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Whether `user` may read (and list) `dir`, asked of the kernel by a child running as it.
pub fn can_read(user: &RunnerUser, dir: &Path) -> bool {
    can(user, dir, "-r")
}

/// Whether `user` may create files in `dir`.
pub fn can_write(user: &RunnerUser, dir: &Path) -> bool {
    can(user, dir, "-w")
}

fn can(user: &RunnerUser, dir: &Path, test: &str) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("test")
        .arg(test)
        .arg(dir)
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .uid(user.uid)
        .gid(user.gid)
        .stdin(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain() {
        assert!(is_user_name("bootfarm"));
        assert!(is_user_name("bf-runner_2"));
        assert!(!is_user_name("-x"));
        assert!(!is_user_name("a b"));
        assert!(!is_user_name("root;rm"));
        assert!(!is_user_name(""));
    }

    /// Farms starting together (as the test suite's do) must agree on one runner user. Needs
    /// root, as the standalone farm's runner user does; CI runs as root.
    #[test]
    fn farms_starting_together_agree_on_the_runner_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: creating users needs root");
            return;
        }
        let name = format!("bftest{}", std::process::id() % 100_000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let name = name.clone();
                std::thread::spawn(move || ensure_user(&name).map(|u| u.uid))
            })
            .collect();
        let uids: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let now = nix::unistd::User::from_name(&name)
            .unwrap()
            .map(|u| u.uid.as_raw());
        let _ = std::process::Command::new("userdel").arg(&name).status();
        let uids: Vec<u32> = uids.into_iter().map(|u| u.unwrap()).collect();
        assert!(now.is_some(), "{name} was not created");
        assert!(uids.iter().all(|&u| Some(u) == now), "{uids:?} vs {now:?}");
    }
}
