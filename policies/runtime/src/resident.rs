//! Which pages of a guest's memory the process has populated, read from the kernel's page
//! map rather than from the memory itself.
//!
//! Reading a page of a pooled instance's memory populates it (a page of the module's image,
//! or the shared zero page), and it stays populated in that slot after the instance is gone:
//! wasmtime's reset of the slot for the next instance then walks it on every evaluation. So
//! code that inspects a guest's memory outside an evaluation (configuring, `policy.rs`) reads
//! only the pages already populated; the others hold the module's initial contents by
//! definition (nothing has written them since the slot was reset).

/// For each page of `memory`, whether it is populated (present or swapped out); `None` where
/// the page map cannot be read (not Linux, or `/proc` unavailable): then every page counts.
pub(crate) fn populated_pages(memory: &[u8]) -> Option<Vec<bool>> {
    imp::populated_pages(memory)
}

/// The host's page size.
pub(crate) fn page_size() -> usize {
    imp::page_size()
}

#[cfg(target_os = "linux")]
mod imp {
    use std::os::unix::fs::FileExt;

    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;

    pub(super) fn page_size() -> usize {
        // SAFETY: sysconf reads a constant of the system; no memory is handed to it.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    }

    pub(super) fn populated_pages(memory: &[u8]) -> Option<Vec<bool>> {
        if memory.is_empty() {
            return Some(Vec::new());
        }
        let page = page_size();
        let start = memory.as_ptr() as usize;
        let first = start / page;
        let last = (start + memory.len() - 1) / page;
        // One 64-bit entry per virtual page (Documentation/admin-guide/mm/pagemap.rst).
        let mut entries = vec![0u8; (last - first + 1) * 8];
        let map = std::fs::File::open("/proc/self/pagemap").ok()?;
        map.read_exact_at(&mut entries, (first * 8) as u64).ok()?;
        Some(
            entries
                .chunks_exact(8)
                .map(|e| {
                    let e = u64::from_ne_bytes(e.try_into().expect("chunks of 8"));
                    e & (PRESENT | SWAPPED) != 0
                })
                .collect(),
        )
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn page_size() -> usize {
        4096
    }

    pub(super) fn populated_pages(_memory: &[u8]) -> Option<Vec<bool>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wasm memory (as a guest's) is mapped, not allocated: a page is populated once
    /// touched, and reading the page map does not populate it.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_page_is_populated_once_touched_and_not_before() {
        let engine = wasmtime::Engine::default();
        let mut store = wasmtime::Store::new(&engine, ());
        let memory = wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(4, None)).unwrap();
        let page = page_size();
        let before = populated_pages(memory.data(&store)).unwrap();
        assert_eq!(before.len(), 4 * 65536 / page);
        assert!(before.iter().all(|&p| !p), "{before:?}");
        memory.data_mut(&mut store)[5 * page + 1] = 1;
        let after = populated_pages(memory.data(&store)).unwrap();
        let populated: Vec<usize> = (0..after.len()).filter(|&i| after[i]).collect();
        assert_eq!(populated, [5]);
    }
}
