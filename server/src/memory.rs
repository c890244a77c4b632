//! Giving freed heap memory back to the operating system.
//!
//! glibc's malloc keeps what a burst of heavy requests freed: the frames of an upload are small
//! allocations spread over several arenas, and an arena only shrinks from its top. Measured with
//! 16 uploads of 15 MB at once, 119 MB stayed resident afterwards over an idle 11 MB.
//! `malloc_trim` hands every whole free page of every arena back.

/// Returns the free pages of the heap to the operating system (glibc); a no-op elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers; it only walks and trims malloc's own arenas, under
    // their locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the free pages of the heap to the operating system (glibc); a no-op elsewhere.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
