//! User-space process crashes the kernel logs (`show_unhandled_signals`): recorded, never
//! taken for a fault of the kernel itself.
//!
//! - x86: `traps: prog[123] general protection fault ip:... sp:... error:0 in libc.so.6[...]`,
//!   `prog[123]: segfault at 0 ip ... sp ... error 4 in prog[...]`
//! - arm64: `prog[123]: unhandled level 2 translation fault (11) at 0x0, esr 0x92000006, in prog[...]`
//! - arm: `prog: unhandled page fault (11) at 0x00000000, code 0x017`
//! - riscv: `prog[123]: unhandled signal 11 code 0x1 at 0x0 in prog[...]`

/// Whether the line reports a user-space crash.
pub fn is_user_fault(t: &str) -> bool {
    if t.starts_with("traps: ") {
        return true;
    }
    let Some(colon) = t.find(": ") else {
        return false;
    };
    let (who, what) = (&t[..colon], &t[colon + 2..]);
    let comm_like = !who.is_empty() && !who.contains(' ');
    comm_like
        && (what.starts_with("segfault at ")
            || what.starts_with("unhandled signal ")
            || (what.starts_with("unhandled ") && what.contains(" fault (")))
}

/// `traps: prog general protection fault in libc.so.6`: the program, what happened and where,
/// without pids, addresses or registers.
pub fn title(t: &str) -> String {
    let t = t.trim();
    let (prefix, rest) = match t.strip_prefix("traps: ") {
        Some(r) => ("traps: ", r),
        None => ("", t),
    };
    let mut words = rest.split(' ');
    let first = words.next().unwrap_or("");
    let comm = first.split('[').next().unwrap_or("").trim_end_matches(':');
    // What happened: the words up to the first register, address or errno detail.
    let what: Vec<&str> = words
        .take_while(|w| !(w.starts_with("ip") || w.starts_with('(') || *w == "at" || *w == "code"))
        .collect();
    let object = rest
        .rsplit_once(" in ")
        .and_then(|(_, o)| o.split('[').next())
        .filter(|o| !o.is_empty() && !o.contains(' '));
    let mut s = format!("{prefix}{comm}: {}", what.join(" "));
    if let Some(o) = object {
        s.push_str(" in ");
        s.push_str(o);
    }
    super::title::tidy(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_keep_program_fault_and_object() {
        assert_eq!(
            title("traps: a.out[123] general protection fault ip:401136 sp:7ffd8 error:0 in libc.so.6[7f00+1000]"),
            "traps: a.out: general protection fault in libc.so.6"
        );
        assert_eq!(
            title("init[1]: unhandled level 2 translation fault (11) at 0x0, esr 0x92000006, in busybox[400000+10000]"),
            "init: unhandled level 2 translation fault in busybox"
        );
        assert_eq!(
            title("a.out[77]: segfault at 0 ip 0000000000401136 sp 00007ffd error 6 in a.out[401000+1000] likely on CPU 0 (core 0, socket 0)"),
            "a.out: segfault in a.out"
        );
        assert!(!is_user_fault("Kernel panic - not syncing: x"));
        assert!(!is_user_fault(
            "general protection fault, probably for non-canonical address"
        ));
    }
}
