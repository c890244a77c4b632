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

/// Allocations at least this large get pages of their own from the system, given back when
/// freed.
pub const OWN_PAGES_BYTES: usize = 1 << 20;

/// Makes glibc's malloc give every allocation of [`OWN_PAGES_BYTES`] or more pages of its own
/// (`M_MMAP_THRESHOLD`), returned to the system when it is freed. By default the threshold
/// rises to the largest block freed (up to 32 MiB), after which entries of several MiB come
/// from per-thread arenas, where the database's threads keep their space resident: measured
/// with eight batch gets of 8 MiB entries at once, 200 MB over an idle 13 MB. Call once, early.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn large_blocks_from_the_system() {
    // SAFETY: mallopt only sets one of malloc's own parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_BYTES as libc::c_int);
    }
}

/// Nothing outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn large_blocks_from_the_system() {}
