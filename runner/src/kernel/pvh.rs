//! Whether an ELF kernel can be entered at a PVH entry point: QEMU's x86 loader boots an ELF
//! `-kernel` only through the `XEN_ELFNOTE_PHYS32_ENTRY` note, which `CONFIG_PVH` kernels carry.

use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, Endianness, FileKind, ReadRef};

const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// An ELF kernel, as far as booting it by PVH goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfKernel {
    /// `e_machine`: `EM_X86_64` or `EM_386` for the kernels this path applies to.
    pub machine: u16,
    pub pvh: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("not a readable ELF file: {0}")]
pub struct NotElf(String);

pub fn inspect<'a, R: ReadRef<'a>>(data: R) -> Result<ElfKernel, NotElf> {
    let err = |e: object::Error| NotElf(e.to_string());
    match FileKind::parse(data).map_err(err)? {
        FileKind::Elf32 => scan::<elf::FileHeader32<Endianness>, R>(data).map_err(err),
        FileKind::Elf64 => scan::<elf::FileHeader64<Endianness>, R>(data).map_err(err),
        other => Err(NotElf(format!("{other:?}"))),
    }
}

fn scan<'a, H, R>(data: R) -> object::read::Result<ElfKernel>
where
    H: FileHeader<Endian = Endianness>,
    R: ReadRef<'a>,
{
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let machine = header.e_machine(endian);
    for ph in header.program_headers(endian, data)? {
        let Some(mut notes) = ph.notes(endian, data)? else {
            continue;
        };
        while let Some(note) = notes.next()? {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return Ok(ElfKernel { machine, pvh: true });
            }
        }
    }
    Ok(ElfKernel {
        machine,
        pvh: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::payload::tests::data;

    #[test]
    fn the_pvh_note_is_found_and_its_absence_noticed() {
        let elf = std::fs::read(data("pvh.elf")).unwrap();
        assert_eq!(
            inspect(elf.as_slice()).unwrap(),
            ElfKernel {
                machine: elf::EM_X86_64,
                pvh: true
            }
        );
        // The same ELF with another note type (18 is at the note's n_type, after the
        // 64-byte header, one 56-byte program header and two sizes).
        let mut other = elf.clone();
        let at = 64 + 56 + 8;
        assert_eq!(other[at], 18);
        other[at] = 17;
        assert!(!inspect(other.as_slice()).unwrap().pvh);
        assert!(inspect(&b"MZ not an elf"[..]).is_err());
        assert!(inspect(&elf[..40]).is_err());
    }
}
