//! Login, password and shell prompts. A prompt waits for input, so it usually arrives without a
//! newline: the classifier checks the pending partial line with the `partial` forms, and a
//! completed line (the prompt followed by the echo of what was typed) with the `full` forms.
//! Both are anchored at the start of the line so kernel messages never look like prompts.

use regex::Regex;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Login,
    Password,
    Shell,
}

struct Res {
    shell_partial: Regex,
    shell_prefix: Regex,
    login_partial: Regex,
    login_prefix: Regex,
}

/// Longest text a prompt can be: longer matches are not prompts.
const PROMPT_MAX: usize = 300;

fn res() -> &'static Res {
    static RES: OnceLock<Res> = OnceLock::new();
    RES.get_or_init(|| {
        // `/ # `, `~ # `, `/tmp $ `, `root@host:/# `, `root@host:~# `, `user@host:~$ `, `$ `.
        // ASCII names and unbounded paths keep the automata small; the length bound is
        // checked on the match instead.
        let name = r"[A-Za-z0-9_.-]+";
        let shell = format!(r"(?:{name}@{name}:[^\s#$]*\s?[#$]|[/~][^\s#$]*\s?[#$]|\$)");
        let login = format!(r"(?:{name} )?login:");
        let re = |s: &str| Regex::new(s).expect("static regex");
        Res {
            shell_partial: re(&format!(r"^{shell} ?$")),
            shell_prefix: re(&format!(r"^{shell}")),
            login_partial: re(&format!(r"^{login} ?$")),
            login_prefix: re(&format!(r"^{login}")),
        }
    })
}

/// A prefix match short enough to be a prompt.
fn prefix(re: &Regex, t: &str) -> bool {
    re.find(t).is_some_and(|m| m.end() <= PROMPT_MAX)
}

/// `Last login: ...` is what login prints after a successful login, not a prompt.
fn last_login(t: &str) -> bool {
    t.starts_with("Last login:")
}

/// A prompt on the unterminated line the guest is waiting on.
pub fn partial(text: &str) -> Option<Prompt> {
    let t = text.trim_start();
    if t.len() > PROMPT_MAX {
        return None;
    }
    let r = res();
    if t.trim_end() == "Password:" {
        return Some(Prompt::Password);
    }
    if r.login_partial.is_match(t) && !last_login(t) {
        return Some(Prompt::Login);
    }
    if r.shell_partial.is_match(t) {
        return Some(Prompt::Shell);
    }
    None
}

/// A completed line that starts with a prompt (followed by the echo of the typed input):
/// exactly the lines some prefix of which `partial` accepts, so whether a prompt was seen
/// never depends on where the bytes were chunked.
pub fn full(text: &str) -> Option<Prompt> {
    let t = text.trim_start();
    let first = *t.as_bytes().first()?;
    let r = res();
    if t.starts_with("Password:") {
        return Some(Prompt::Password);
    }
    let head = &t.as_bytes()[..t.len().min(PROMPT_MAX)];
    if memchr::memmem::find(head, b"login:").is_some()
        && prefix(&r.login_prefix, t)
        && !last_login(t)
    {
        return Some(Prompt::Login);
    }
    let candidate = match first {
        b'/' | b'~' | b'$' => true,
        // `user@host:` prompts.
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
            memchr::memchr(b'@', head).is_some()
        }
        _ => false,
    };
    if candidate && prefix(&r.shell_prefix, t) {
        return Some(Prompt::Shell);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_prompts() {
        for p in [
            "/ # ",
            "~ # ",
            "root@host:/# ",
            "root@bootfarm:~# ",
            "user@h:~$ ",
            "$ ",
        ] {
            assert_eq!(partial(p), Some(Prompt::Shell), "{p:?}");
        }
        assert_eq!(full("/ # uname -a"), Some(Prompt::Shell));
        assert_eq!(full("root@bootfarm:~# echo hi"), Some(Prompt::Shell));
        assert_eq!(full("# Subtest: foo"), None);
        assert_eq!(partial("# "), None, "KTAP diagnostics start with `# `");
        assert_eq!(partial("/ # una"), None);
    }

    #[test]
    fn login_prompts() {
        assert_eq!(partial("bootfarm login: "), Some(Prompt::Login));
        assert_eq!(full("bootfarm login: root"), Some(Prompt::Login));
        assert_eq!(partial("Password: "), Some(Prompt::Password));
        assert_eq!(
            full("Last login: Sat Nov 28 12:00:00 UTC 2026 on ttyS0"),
            None
        );
    }

    #[test]
    fn kernel_lines_are_not_prompts() {
        for l in [
            "/dev/root: Can't open blockdev",
            "Kernel command line: console=ttyS0 panic=-1",
            "Run /init as init process",
            "systemd[1]: Started foo@bar.service - x",
        ] {
            assert_eq!(full(l), None, "{l}");
            assert_eq!(partial(l), None, "{l}");
        }
    }
}
