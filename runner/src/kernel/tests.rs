use super::format::tests::bzimage_with;
use super::payload::tests::{data, sample};
use super::*;
use crate::artifacts::Limits;

fn arm64_image() -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x38..0x3c].copy_from_slice(b"ARM\x64");
    b
}

fn plan_of(arch: Arch, mode: KernelBoot, image: &[u8]) -> Plan {
    let header = &image[..image.len().min(format::HEADER_LEN)];
    let head: Vec<u8> = format::bzimage_payload(header, image.len() as u64)
        .map(|r| {
            image[usize::try_from(r.start).unwrap()..]
                .iter()
                .take(16)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    plan(arch, mode, header, image.len() as u64, &head)
}

#[test]
fn only_x86_bzimages_take_the_fast_path_and_only_in_auto_mode() {
    let bz = bzimage_with(&sample(PayloadCodec::Xz));
    let Plan::Extract { codec, payload } = plan_of(Arch::X86_64, KernelBoot::Auto, &bz) else {
        panic!("a bzImage is extracted")
    };
    assert_eq!(codec, PayloadCodec::Xz);
    assert_eq!(payload.start, 4 * 512 + 0x40);
    assert!(matches!(
        plan_of(Arch::I386, KernelBoot::Auto, &bz),
        Plan::Extract { .. }
    ));
    let as_is = |arch, mode, image: &[u8]| match plan_of(arch, mode, image) {
        Plan::AsIs(reason) => reason,
        Plan::Extract { .. } => panic!("{arch} {mode:?}: extracted"),
    };
    assert!(as_is(Arch::X86_64, KernelBoot::AsIs, &bz).contains("as-is"));
    assert!(as_is(Arch::X86_64, KernelBoot::Auto, &arm64_image()).contains("not a bzImage (Image)"));
    assert!(as_is(Arch::Arm64, KernelBoot::Auto, &arm64_image()).contains("on the host"));
    assert!(as_is(Arch::Riscv64, KernelBoot::Auto, &bz).contains("riscv64"));
    let mut zimage = vec![0u8; 0x100];
    zimage[0x24..0x28].copy_from_slice(&0x016f_2818u32.to_le_bytes());
    assert!(as_is(Arch::Armv7, KernelBoot::Auto, &zimage).contains("zImage"));
    let stored = bzimage_with(b"\x7fELF not compressed");
    assert!(as_is(Arch::X86_64, KernelBoot::Auto, &stored).contains("no known codec"));
    assert!(as_is(Arch::X86_64, KernelBoot::Auto, &bz[..0x300]).contains("payload not found"));
}

fn cache(dir: &Path) -> ArtifactCache {
    ArtifactCache::new(dir.join("cache"), Limits::default()).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test]
async fn every_codec_is_extracted_once_and_then_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let elf = std::fs::read(data("pvh.elf")).unwrap();
    let elf_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&elf))
    };
    for codec in PayloadCodec::ALL {
        let kernel = write(dir.path(), codec.as_str(), &bzimage_with(&sample(codec)));
        let sha = format!("{:064}", codec as u8);
        let first = choose(Arch::X86_64, KernelBoot::Auto, &cache, &kernel, &sha).await;
        assert_eq!(
            first.booted.format, "pvh-elf",
            "{codec:?}: {:?}",
            first.booted
        );
        assert_eq!(first.booted.codec.as_deref(), Some(codec.as_str()));
        assert_eq!(first.booted.from.as_deref(), Some("bzImage"));
        assert_eq!(first.booted.kaslr, Some(false));
        assert_eq!(first.booted.sha256.as_deref(), Some(elf_sha.as_str()));
        assert_eq!(first.booted.cached, Some(false));
        assert!(std::fs::read(&first.path).unwrap() == elf, "{codec:?}");
        assert!(first.held.is_some());
        let again = choose(Arch::X86_64, KernelBoot::Auto, &cache, &kernel, &sha).await;
        assert_eq!(again.path, first.path);
        assert_eq!(again.booted.sha256, first.booted.sha256);
        assert_eq!(
            (again.booted.cached, again.booted.extract_ms),
            (Some(true), Some(0))
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn what_cannot_be_booted_by_pvh_is_booted_as_given_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    // Writes `image` as `name`, chooses for `arch` (`digit` makes its cache key) and checks
    // that the image itself is booted, for a reason saying `want`.
    let as_given =
        |arch: Arch, name: &'static str, image: Vec<u8>, digit: char, want: &'static str| {
            let kernel = write(dir.path(), name, &image);
            let cache = &cache;
            async move {
                let sha = digit.to_string().repeat(64);
                let c = choose(arch, KernelBoot::Auto, cache, &kernel, &sha).await;
                assert_eq!(c.path, kernel);
                assert_eq!(c.booted.format, "bzImage");
                let reason = c.booted.reason.as_deref().unwrap_or_default();
                assert!(reason.contains(want), "{reason:?} lacks {want:?}");
                assert!(c.held.is_none());
            }
        };
    // A kernel without CONFIG_PVH: decided once, remembered (the same key, the image rewritten).
    let mut elf = std::fs::read(data("pvh.elf")).unwrap();
    elf[64 + 56 + 8] = 17;
    let nopvh = bzimage_with(&gzip(&elf));
    as_given(
        Arch::X86_64,
        "nopvh",
        nopvh.clone(),
        '1',
        "no PVH entry point",
    )
    .await;
    std::fs::remove_file(dir.path().join("nopvh")).unwrap();
    as_given(Arch::X86_64, "nopvh", nopvh, '1', "no PVH entry point").await;
    // A 64-bit kernel given as i386.
    let x86_64 = bzimage_with(&sample(PayloadCodec::Gzip));
    as_given(Arch::I386, "x86_64", x86_64, '2', "not i386").await;
    // Garbage that merely looks compressed.
    let mut fake = vec![0xfd, b'7', b'z', b'X', b'Z', 0x00];
    fake.extend((0..65536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    as_given(
        Arch::X86_64,
        "fake",
        bzimage_with(&fake),
        '3',
        "corrupt xz payload",
    )
    .await;
    // An empty payload.
    as_given(
        Arch::X86_64,
        "empty",
        bzimage_with(&[]),
        '4',
        "payload not found",
    )
    .await;
    // A payload that decompresses, but not to an ELF.
    let text = bzimage_with(&gzip(b"not a kernel at all"));
    as_given(Arch::X86_64, "notelf", text, '6', "is not a readable ELF").await;
    let missing = dir.path().join("missing");
    let c = choose(
        Arch::X86_64,
        KernelBoot::Auto,
        &cache,
        &missing,
        &"5".repeat(64),
    )
    .await;
    assert!(c.booted.reason.unwrap().contains("could not read"));
}

#[tokio::test]
async fn an_extraction_past_the_size_limit_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_size: 100_000,
        ..Limits::default()
    };
    let cache = ArtifactCache::new(dir.path().join("cache"), limits).unwrap();
    let kernel = write(dir.path(), "k", &bzimage_with(&sample(PayloadCodec::Zstd)));
    let c = choose(
        Arch::X86_64,
        KernelBoot::Auto,
        &cache,
        &kernel,
        &"6".repeat(64),
    )
    .await;
    assert_eq!(c.path, kernel);
    assert!(c.booted.reason.unwrap().contains("exceeds"), "a size limit");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}
