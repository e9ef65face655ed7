//! The spec validator against arbitrary strings in every field (the fuzz pass CI runs): it never
//! panics, and whatever it accepts passes nothing to QEMU outside the strict grammar.

use bootfarm_core::spec::{validate, ArtifactRef, BootJobSpec, Location, Timeouts};
use bootfarm_core::Arch;
use proptest::prelude::*;

/// Strings that reach the interesting branches: QEMU properties, paths, control characters,
/// odd URLs, near-valid values.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        prop::sample::select(vec![
            "q35".to_string(),
            "virt,gic-version=3".into(),
            "virt,dumpdtb=/etc/x".into(),
            "q35,,kernel=/x".into(),
            "max,+avx".into(),
            "Nehalem,model-id=x".into(),
            "host".into(),
            "512M".into(),
            "1T".into(),
            "file:///etc/shadow".into(),
            "http://169.254.169.254/latest".into(),
            "https://x.example/k".into(),
            "root:secret".into(),
            "a\nb".into(),
            "\u{1b}[2J".into(),
            "".into(),
        ]),
    ]
}

fn opt() -> impl Strategy<Value = Option<String>> {
    prop::option::of(field())
}

fn artifact() -> impl Strategy<Value = Option<ArtifactRef>> {
    prop::option::of((field(), opt()).prop_map(|(url, sha256)| ArtifactRef { url, sha256 }))
}

prop_compose! {
    fn base_spec()(
        arch in prop::sample::select(Arch::ALL.to_vec()),
        kernel in field(),
        initrd in artifact(),
        rootfs in artifact(),
        boot_args in opt(),
        machine in opt(),
        cpu in opt(),
        memory in opt(),
        smp in prop::option::of(any::<u32>()),
        accel in opt(),
        expect in opt(),
        login in opt(),
        commands in prop::collection::vec(field(), 0..4),
        fail_on in prop::collection::vec(field(), 0..3),
        patterns in prop::collection::vec(field(), 0..3),
        timeouts in prop::option::of((prop::option::of(any::<u64>()), prop::option::of(any::<u64>()))),
        pool in opt(),
    ) -> BootJobSpec {
        let mut s = BootJobSpec::new(arch, kernel);
        s.initrd = initrd;
        s.rootfs = rootfs;
        s.boot_args = boot_args;
        s.machine = machine;
        s.cpu = cpu;
        s.memory = memory;
        s.smp = smp;
        s.accel = accel;
        s.expect = expect;
        s.login = login;
        s.commands = commands;
        s.fail_on = fail_on;
        s.failure_patterns = patterns;
        s.timeouts = timeouts.map(|(boot, total)| Timeouts { boot, total });
        s.pool = pool;
        s
    }
}

prop_compose! {
    // The rest of the fields, composed separately: one strategy of them all overflows the
    // test thread's stack in debug builds.
    fn spec()(
        s in base_spec().boxed(),
        (kernel_sha256, modules, dtb, kernel_boot) in (opt(), artifact(), artifact(), opt()).boxed(),
        (expect_tests, ignore) in (prop::collection::vec(field(), 0..3), prop::collection::vec(field(), 0..3)).boxed(),
        (priority, max_attempts, ttl) in (any::<i32>(), prop::option::of(any::<u32>()), prop::option::of(any::<u64>())).boxed(),
    ) -> BootJobSpec {
        let mut s = s;
        s.kernel.sha256 = kernel_sha256;
        s.modules = modules;
        s.dtb = dtb;
        s.kernel_boot = kernel_boot;
        s.expect_tests = expect_tests;
        s.ignore = ignore;
        s.priority = priority;
        s.max_attempts = max_attempts;
        s.ttl_seconds_after_finished = ttl;
        s
    }
}

fn grammar_only(arg: &str) -> bool {
    arg.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b",=._+-".contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_validator_never_panics_and_accepts_only_the_grammar(s in spec()) {
        let Ok(v) = validate(&s) else {
            return Ok(());
        };
        if let Some(m) = &v.machine {
            let arg = m.to_arg();
            prop_assert!(grammar_only(&arg), "{arg}");
            for bad in ["dumpdtb", "dtb=", "kernel=", "initrd=", "append=", "firmware", "memory-backend", "accel="] {
                prop_assert!(!arg.contains(bad), "{arg}");
            }
        }
        if let Some(c) = &v.cpu {
            let arg = c.to_arg(v.arch);
            prop_assert!(grammar_only(&arg), "{arg}");
            prop_assert!(!arg.contains("model-id"), "{arg}");
        }
        prop_assert!(!v.boot_args.chars().any(char::is_control), "{:?}", v.boot_args);
        prop_assert!(v.boot_args.len() <= 4096);
        if let Some(mem) = v.memory {
            prop_assert!((16 << 20..=64 << 30).contains(&mem));
        }
        for c in &v.commands {
            prop_assert!(!c.contains(['\n', '\r', '\0']));
        }
        prop_assert!(v.total_timeout.as_secs() <= 24 * 3600 && v.boot_timeout <= v.total_timeout);
        for (_, a) in v.artifacts() {
            if let Location::Http(u) = &a.location {
                prop_assert!(matches!(u.scheme(), "http" | "https"));
            }
        }
    }
}
