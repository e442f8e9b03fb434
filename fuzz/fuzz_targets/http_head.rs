//! Fuzzes the HTTP request-head parser through the sans-I/O session.
#![no_main]

#[path = "session.rs"]
mod session;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    session::check(servers::protocol::Protocol::Http, data);
});
