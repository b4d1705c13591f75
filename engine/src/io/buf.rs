//! `AlignedBuf`: the only owner of raw memory handed to the kernel for direct I/O.
//!
//! Owns: allocation, alignment and lifetime of sector-aligned byte buffers.
//! Does not own: which file or offset a buffer is written to (callers assert offsets).
//!
//! Invariants:
//! - B1: `ptr` is aligned to `SECTOR_BYTES` and points to `capacity` bytes, all initialised
//!   (zeroed at allocation), so any prefix may be handed to `write` or exposed as a slice.
//! - B2: `capacity` is a non-zero multiple of `SECTOR_BYTES`.
//! - B3: the memory address never changes while the buffer lives, even when the `AlignedBuf`
//!   value is moved: the io_uring layer may hold a raw pointer while the value sits in its
//!   in-flight table.
#![expect(unsafe_code, reason = "aligned allocation for O_DIRECT buffers")]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use crate::constants::SECTOR_BYTES;

/// A zero-initialised, `SECTOR_BYTES`-aligned heap buffer with a fixed capacity and a length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
    /// Index among the io_uring registered (fixed) buffers, if this buffer was registered.
    fixed_index: Option<u16>,
}

// SAFETY: `AlignedBuf` uniquely owns its allocation (like `Vec<u8>`); no shared interior state.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity` bytes rounded up to a whole number of sectors, zeroed, length 0.
    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        let capacity = capacity
            .max(1)
            .checked_next_multiple_of(SECTOR_BYTES)
            .filter(|c| *c <= isize::MAX as usize)
            .expect("AlignedBuf capacity overflows");
        let layout = Self::layout(capacity);
        // SAFETY: `layout` has a non-zero size (B2) and a power-of-two alignment.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        assert!((ptr.as_ptr() as usize).is_multiple_of(SECTOR_BYTES));
        AlignedBuf { ptr, capacity, len: 0, fixed_index: None }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, SECTOR_BYTES).expect("capacity overflows Layout")
    }

    /// The registered-buffer index, if the buffer is registered with an io_uring.
    pub fn fixed_index(&self) -> Option<u16> {
        self.fixed_index
    }

    /// Records that the buffer is registered with an io_uring under `index`. Only the io_uring
    /// layer calls this, and a registered buffer must outlive its registration (see uring.rs).
    pub fn set_fixed_index(&mut self, index: u16) {
        self.fixed_index = Some(index);
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length in use. Bytes past the old length keep whatever they held (B1).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity);
        self.len = len;
    }

    /// Zeroes the bytes in use and sets the length to 0.
    pub fn clear(&mut self) {
        let len = self.len;
        self.as_full_mut_slice()[..len].fill(0);
        self.len = 0;
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: B1: `len <= capacity` bytes are initialised and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: B1, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// All `capacity` bytes, mutably (for filling before `set_len`, or reading into).
    pub fn as_full_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: B1: all `capacity` bytes are initialised; `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Raw pointer for the kernel. Valid until the buffer is dropped (B3).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Raw mutable pointer for the kernel (reads into the buffer). Valid until drop (B3).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl AsRef<[u8]> for AlignedBuf {
    /// The first `len` bytes (`as_slice`), so a read buffer can back `Bytes` without a copy.
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("capacity", &self.capacity).field("len", &self.len).finish()
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub fn round_up(value: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buf_is_aligned_zeroed_and_rounded() {
        let mut buf = AlignedBuf::with_capacity(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.as_ptr() as usize % SECTOR_BYTES, 0);
        assert!(buf.as_full_mut_slice().iter().all(|b| *b == 0));
        buf.set_len(10);
        buf.as_mut_slice().fill(7);
        buf.clear();
        assert!(buf.is_empty());
        buf.set_len(10);
        assert!(buf.as_slice().iter().all(|b| *b == 0));
    }
}
