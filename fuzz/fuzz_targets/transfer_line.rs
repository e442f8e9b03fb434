//! Fuzzes the transfer request-line parser through the sans-I/O session.
#![no_main]

#[path = "session.rs"]
mod session;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    session::check(servers::protocol::Protocol::Transfer, data);
});
