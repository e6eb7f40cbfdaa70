//! The `lifeboat` binary: a thin shell over [`lifeboat_cli::main`].

fn main() -> std::process::ExitCode {
    bounded_heap();
    lifeboat_cli::main()
}

/// glibc raises its mmap threshold each time a large buffer is freed, up to 32 MiB, after
/// which pack-sized buffers come from the heap and stay there once freed: `check
/// --read-data` of a 1.2 GiB repository peaked at 212 MiB that way, 103 MiB with the threshold
/// held at 4 MiB (same time). Held for the whole process, agents included.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn bounded_heap() {
    // SAFETY: mallopt only changes allocator tuning; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bounded_heap() {}
