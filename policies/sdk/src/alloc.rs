//! The guest's allocator: a bump allocator that never frees.
//!
//! Every evaluation runs in a fresh instance that is thrown away afterwards, so freeing is
//! wasted work. More importantly, the first [`ARENA`] bytes live in the module's static
//! memory: a typical evaluation never executes `memory.grow`, and so never makes the host
//! change page protections (two `mprotect`s and a TLB shootdown per call otherwise, which
//! was most of the fixed cost of an evaluation). Past the arena it grows memory page by page.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const ARENA: usize = 192 << 10;
const PAGE: usize = 64 << 10;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA]>);

// SAFETY: wasm32 guests are single-threaded.
unsafe impl Sync for Arena {}

static ARENA_MEM: Arena = Arena(UnsafeCell::new([0; ARENA]));

pub struct Bump {
    next: UnsafeCell<usize>,
    end: UnsafeCell<usize>,
}

// SAFETY: wasm32 guests are single-threaded.
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Bump {
            next: UnsafeCell::new(0),
            end: UnsafeCell::new(0),
        }
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded; the cells are only touched here.
        unsafe {
            let (next, end) = (&mut *self.next.get(), &mut *self.end.get());
            if *end == 0 {
                *next = ARENA_MEM.0.get() as usize;
                *end = *next + ARENA;
            }
            let start = (*next + layout.align() - 1) & !(layout.align() - 1);
            let stop = match start.checked_add(layout.size()) {
                Some(s) => s,
                None => return core::ptr::null_mut(),
            };
            if stop > *end {
                // Continue in fresh pages at the end of memory.
                let pages = (layout.size() + layout.align()).div_ceil(PAGE);
                let old = core::arch::wasm32::memory_grow(0, pages);
                if old == usize::MAX {
                    return core::ptr::null_mut();
                }
                *next = old * PAGE;
                *end = *next + pages * PAGE;
                return unsafe { self.alloc(layout) };
            }
            *next = stop;
            start as *mut u8
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for alloc.
        unsafe {
            let next = &mut *self.next.get();
            // The last allocation can grow in place.
            if ptr as usize + layout.size() == *next && ptr as usize + new_size <= *self.end.get() {
                *next = ptr as usize + new_size;
                return ptr;
            }
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
