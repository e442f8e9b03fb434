//! `echo`: every byte read is written back, in order. No framing.

use super::Step;

#[derive(Debug, Default)]
pub struct Echo;

impl Echo {
    #[inline]
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Step {
        let room = limit.saturating_sub(out.len());
        let n = input.len().min(room);
        out.extend_from_slice(&input[..n]);
        Step {
            consumed: n,
            close: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_split_invariant, drive};
    use super::super::{Protocol, Session};

    #[test]
    fn echoes_every_byte_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let (out, closed) = drive(&mut Session::new(Protocol::Echo), &[&data], 1 << 20);
        assert_eq!(out, data);
        assert!(!closed);
    }

    #[test]
    fn stops_at_the_limit_and_resumes() {
        let mut s = Session::new(Protocol::Echo);
        let mut out = Vec::new();
        let step = s.advance(b"abcdef", &mut out, 4);
        assert_eq!(step.consumed, 4);
        assert_eq!(out, b"abcd");
        let step = s.advance(b"ef", &mut out, 4);
        assert_eq!(step.consumed, 0, "nothing more while out is at the limit");
        out.clear();
        let step = s.advance(b"ef", &mut out, 4);
        assert_eq!((step.consumed, out.as_slice()), (2, &b"ef"[..]));
    }

    #[test]
    fn split_anywhere_same_output() {
        assert_split_invariant(
            || Session::new(Protocol::Echo),
            b"hello, echo world\n\0\xff",
        );
    }
}
