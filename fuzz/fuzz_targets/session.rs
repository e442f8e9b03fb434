//! What both targets check: a session fed arbitrary bytes never panics, never exceeds its
//! output limit by more than one reply, and answers the same whether its input arrives whole
//! or split at any point (the first input byte picks the split).

use servers::protocol::{Protocol, Session};

/// Room for the largest single reply a session appends past the limit check.
const SLACK: usize = 16 * 1024 + 256;
/// How much output is compared at most.
const CAP: usize = 1 << 20;

pub fn check(protocol: Protocol, data: &[u8]) {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let limit = 1 + usize::from(cut) * 64;
    let whole = drive(protocol, &[input], limit);
    let at = usize::from(cut).min(input.len());
    let (a, b) = input.split_at(at);
    assert_eq!(drive(protocol, &[a, b], limit), whole, "split at {at}");
}

fn drive(protocol: Protocol, chunks: &[&[u8]], limit: usize) -> (Vec<u8>, bool) {
    let mut session = Session::new(protocol);
    let mut input = Vec::new();
    let (mut all, mut out) = (Vec::new(), Vec::new());
    for chunk in chunks {
        input.extend_from_slice(chunk);
        loop {
            let step = session.advance(&input, &mut out, limit);
            assert!(step.consumed <= input.len());
            assert!(out.len() <= limit + SLACK, "output {} over limit {limit}", out.len());
            input.drain(..step.consumed);
            let produced = !out.is_empty();
            all.append(&mut out);
            if step.close {
                return (all, true);
            }
            // A download can be up to 2^40 bytes: compare a bounded prefix of the stream.
            if all.len() >= CAP {
                all.truncate(CAP);
                return (all, false);
            }
            if step.consumed == 0 && !produced {
                break;
            }
        }
    }
    (all, false)
}
