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
    shell_full: Regex,
    login_partial: Regex,
    login_full: Regex,
}

fn res() -> &'static Res {
    static RES: OnceLock<Res> = OnceLock::new();
    RES.get_or_init(|| {
        // `/ # `, `~ # `, `/tmp $ `, `root@host:/# `, `root@host:~# `, `user@host:~$ `, `$ `.
        let shell = r"(?:[\w.-]+@[\w.-]+:[^\s#$]*\s?[#$]|[/~][^\s#$]*\s?[#$]|\$)";
        let re = |s: &str| Regex::new(s).expect("static regex");
        Res {
            shell_partial: re(&format!(r"^(?:{shell}|#) ?$")),
            shell_full: re(&format!(r"^{shell}(?: |$)")),
            login_partial: re(r"^(?:[\w.-]+ )?login: ?$"),
            login_full: re(r"^(?:[\w.-]+ )?login: ?\S*$"),
        }
    })
}

/// A prompt on the unterminated line the guest is waiting on.
pub fn partial(text: &str) -> Option<Prompt> {
    let t = text.trim_start();
    if t.len() > 256 {
        return None;
    }
    let r = res();
    if t.trim_end() == "Password:" {
        return Some(Prompt::Password);
    }
    if r.login_partial.is_match(t) {
        return Some(Prompt::Login);
    }
    if r.shell_partial.is_match(t) {
        return Some(Prompt::Shell);
    }
    None
}

/// A completed line that starts with a prompt (it carries the echo of the typed input).
pub fn full(text: &str) -> Option<Prompt> {
    let t = text.trim_start();
    let first = *t.as_bytes().first()?;
    let r = res();
    if matches!(first, b'/' | b'~' | b'$') || memchr::memchr(b'@', t.as_bytes()).is_some() {
        if r.shell_full.is_match(t) {
            return Some(Prompt::Shell);
        }
    }
    if t.starts_with("Password:") && t.trim_end() == "Password:" {
        return Some(Prompt::Password);
    }
    if t.contains("login:") && r.login_full.is_match(t) {
        return Some(Prompt::Login);
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
            "# ",
        ] {
            assert_eq!(partial(p), Some(Prompt::Shell), "{p:?}");
        }
        assert_eq!(full("/ # uname -a"), Some(Prompt::Shell));
        assert_eq!(full("root@bootfarm:~# echo hi"), Some(Prompt::Shell));
        assert_eq!(full("# Subtest: foo"), None);
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
