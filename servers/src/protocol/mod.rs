//! Sans-I/O protocol state machines: no sockets, no syscalls, no clocks.
//!
//! A model reads bytes however its I/O model allows, hands them to [`Session::advance`], and
//! writes out whatever the session appended to its output buffer. The contract is the same for
//! every protocol, so the only thing that differs between two models is how they learn that a
//! socket is ready or that an operation completed.
//!
//! The caller owns both buffers. `advance` consumes a prefix of the input it is given and
//! appends replies to `out` only while `out.len() < limit`; this is how every model bounds its
//! memory per connection: when the pending output is above the high-water mark the model stops
//! calling `advance` and stops reading, and the client's unread bytes stay in the kernel.

pub mod echo;
pub mod http;
pub mod transfer;

use std::fmt;
use std::str::FromStr;

/// The default high-water mark for pending output (DESIGN.md section 2).
pub const HIGH_WATER: usize = 64 * 1024;

/// How much input a driver must be able to hold so that every protocol can make progress:
/// the largest request head HTTP accepts before answering 431, plus room to read into.
pub const MIN_INPUT_CAPACITY: usize = http::MAX_HEAD + 1;

/// The wire protocols every model speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every byte read is written back, in order.
    Echo,
    /// HTTP/1.1 keep-alive GET answered with "Hello, World!".
    Http,
    /// `PUT <n>` / `GET <n>` bulk upload and download.
    Transfer,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Echo, Protocol::Http, Protocol::Transfer];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Http => "http",
            Protocol::Transfer => "transfer",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown protocol '{s}' (valid: echo, http, transfer)"))
    }
}

/// Test aid (feature `extra-work`, off by default): rounds of throwaway work for every call
/// to [`Session::advance`] that consumes input, and for every new [`Session`] (a connection),
/// so the CI gate and the tier calibration can be shown to catch a slowdown of known size,
/// also where a connection's setup is most of the cost (churn). Without the feature the
/// check does not exist.
#[cfg(feature = "extra-work")]
mod extra_work {
    use std::sync::atomic::{AtomicU32, Ordering};

    static ROUNDS: AtomicU32 = AtomicU32::new(0);
    static PER_CONNECTION: AtomicU32 = AtomicU32::new(0);

    /// Sets the rounds of work per request (`server --extra-work ROUNDS`) and per connection
    /// (`server --extra-work-per-connection ROUNDS`).
    pub fn set(rounds: u32, per_connection: u32) {
        ROUNDS.store(rounds, Ordering::Relaxed);
        PER_CONNECTION.store(per_connection, Ordering::Relaxed);
    }

    #[inline]
    pub fn burn() {
        spin(ROUNDS.load(Ordering::Relaxed));
    }

    #[inline]
    pub fn burn_connection() {
        spin(PER_CONNECTION.load(Ordering::Relaxed));
    }

    #[inline]
    fn spin(rounds: u32) {
        let rounds = rounds as usize;
        let mut i = 0usize;
        while i < rounds {
            // SAFETY: an empty asm statement; the compiler must assume it reads and changes
            // `i`, so the loop is neither folded away nor turned into a formula, and a round
            // costs a handful of instructions whatever the optimisation level.
            unsafe { std::arch::asm!("/* {0} */", inout(reg) i) };
            i += 1;
        }
    }
}

#[cfg(feature = "extra-work")]
pub use extra_work::set as set_extra_work;

/// What one call to [`Session::advance`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// How many bytes at the front of the input were used; the caller drops them.
    pub consumed: usize,
    /// The session is over: send what is in `out`, then close. Do not call `advance` again.
    pub close: bool,
}

/// One connection's protocol state.
#[derive(Debug)]
pub enum Session {
    Echo(echo::Echo),
    Http(http::Http),
    Transfer(transfer::Transfer),
}

impl Session {
    pub fn new(protocol: Protocol) -> Session {
        #[cfg(feature = "extra-work")]
        extra_work::burn_connection();
        match protocol {
            Protocol::Echo => Session::Echo(echo::Echo),
            Protocol::Http => Session::Http(http::Http::default()),
            Protocol::Transfer => Session::Transfer(transfer::Transfer::default()),
        }
    }

    /// Acts on `input`, appending replies to `out` while `out.len() < limit`.
    ///
    /// Returns how much input was consumed. Input that was not consumed is either an
    /// incomplete request (wait for more bytes) or backpressure (`out` reached `limit`); the
    /// caller keeps it and calls again later with more input or a drained `out`.
    #[inline]
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Step {
        let step = match self {
            Session::Echo(s) => s.advance(input, out, limit),
            Session::Http(s) => s.advance(input, out, limit),
            Session::Transfer(s) => s.advance(input, out, limit),
        };
        #[cfg(feature = "extra-work")]
        if step.consumed > 0 {
            extra_work::burn();
        }
        step
    }

    /// True while the session will produce output without any more input (a transfer `GET`
    /// still streaming); the caller keeps calling `advance` as `out` drains.
    #[inline]
    pub fn is_streaming(&self) -> bool {
        match self {
            Session::Transfer(s) => s.is_streaming(),
            Session::Echo(_) | Session::Http(_) => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives a session the way a model does, for the protocol unit tests.
    use super::{Session, Step};

    /// Feeds `chunks` one after another, keeping unconsumed input like a model does, with
    /// output drained after every call. Returns all output and whether the session closed.
    pub fn drive(session: &mut Session, chunks: &[&[u8]], limit: usize) -> (Vec<u8>, bool) {
        let mut input: Vec<u8> = Vec::new();
        let mut all_out = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            input.extend_from_slice(chunk);
            loop {
                let Step { consumed, close } = session.advance(&input, &mut out, limit);
                input.drain(..consumed);
                let produced = !out.is_empty();
                all_out.append(&mut out);
                if close {
                    return (all_out, true);
                }
                if consumed == 0 && !produced {
                    break;
                }
            }
        }
        (all_out, false)
    }

    /// Every split of `request` into two pieces must give the same output as the whole.
    pub fn assert_split_invariant(new: impl Fn() -> Session, request: &[u8]) {
        let whole = drive(&mut new(), &[request], super::HIGH_WATER);
        for cut in 0..=request.len() {
            let (a, b) = request.split_at(cut);
            let split = drive(&mut new(), &[a, b], super::HIGH_WATER);
            assert_eq!(split, whole, "split at byte {cut} changed the output");
        }
        let bytewise: Vec<&[u8]> = request.chunks(1).collect();
        assert_eq!(drive(&mut new(), &bytewise, super::HIGH_WATER), whole);
    }
}
