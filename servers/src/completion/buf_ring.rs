//! The provided buffer ring of `uring-multishot`.

use std::io;

use io_uring::Submitter;

/// A provided buffer ring (Linux 5.19): buffers the kernel picks from when a multishot recv
/// has data, reporting which one in the completion. The loop gives each buffer back as soon
/// as its bytes are consumed. It lives as long as its event loop (which ends only with the
/// process), so it is never unregistered or unmapped.
pub struct BufRing {
    entries: *mut io_uring::types::BufRingEntry,
    data: Vec<u8>,
    size: usize,
    mask: u16,
    tail: u16,
    /// The buffer last placed at each ring position, and the position each buffer was last
    /// placed at: the kernel takes entries from the head in ring order, so a bundle that
    /// starts at buffer `b` goes on with the buffers placed after `b` (`--bundle`).
    placed: Vec<u16>,
    position: Vec<u16>,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes as buffer group `group`.
    pub fn new(submitter: &Submitter, count: u16, size: usize, group: u16) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "a buffer ring has a power-of-two size"
        );
        let bytes = count as usize * std::mem::size_of::<io_uring::types::BufRingEntry>();
        // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `addr` is a page-aligned mapping of `count` entries, zeroed, that stays
        // mapped for the life of the process.
        unsafe { submitter.register_buf_ring_with_flags(addr as u64, count, group, 0)? };
        let mut ring = BufRing {
            entries: addr.cast(),
            // Written once so the pages exist from the start: the ring's memory is a fixed
            // cost of the loop, not something that appears under load.
            data: vec![0x5a; count as usize * size],
            size,
            mask: count - 1,
            tail: 0,
            placed: vec![0; count as usize],
            position: vec![0; count as usize],
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    /// The first `len` bytes of buffer `bid`, as a completion reported them.
    pub fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.size;
        &self.data[start..start + len.min(self.size)]
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The buffers a completion of `len` bytes starting with buffer `first` filled, in
    /// order, appended to `out` (one for a plain recv; one or more for a bundle, each full
    /// but the last). Called before any of them is given back, which reuses their places.
    pub fn filled(&self, first: u16, len: usize, out: &mut Vec<u16>) {
        let start = self.position[first as usize];
        // The kernel flags a buffer (IORING_CQE_F_BUFFER) only for buffers it took off the
        // ring, so a completion that names one took at least that one, also at 0 bytes.
        for i in 0..len.div_ceil(self.size).max(1) {
            let at = start.wrapping_add(i as u16) & self.mask;
            out.push(self.placed[at as usize]);
        }
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        self.placed[(self.tail & self.mask) as usize] = bid;
        self.position[bid as usize] = self.tail;
        // SAFETY: the index is masked into the ring; the buffer address points into `data`,
        // which is never resized, so it stays valid while the kernel may write into it.
        unsafe {
            let entry = &mut *self.entries.add((self.tail & self.mask) as usize);
            entry.set_addr(self.data.as_ptr().add(bid as usize * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            // The kernel reads the tail concurrently: publish it after the entry (Release).
            let tail = io_uring::types::BufRingEntry::tail(self.entries)
                as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}
