//! Cuts a serial byte stream into lines, with a bound on their length.
//!
//! A line ends at CR or LF, so CRLF, bare CR (card readers in keyboard mode) and bare LF all
//! work; the empty line between CR and LF is skipped. A line that grows past the limit is
//! dropped whole, up to its terminator, and reported once as [`Framed::Overlong`]: the
//! framer never holds more than `max` bytes, whatever the device sends.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    Line(Vec<u8>),
    /// A line of this many bytes (at least `max + 1`) was dropped.
    Overlong(usize),
}

#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    buf: Vec<u8>,
    /// Bytes of an overlong line dropped so far, while waiting for its end.
    dropping: Option<usize>,
}

impl LineFramer {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::with_capacity(max.min(4096)),
            dropping: None,
        }
    }

    /// Feeds bytes in; returns the lines and overlong reports they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                if let Some(n) = self.dropping.take() {
                    out.push(Framed::Overlong(n));
                } else if !self.buf.is_empty() {
                    out.push(Framed::Line(std::mem::take(&mut self.buf)));
                }
                continue;
            }
            match &mut self.dropping {
                Some(n) => *n += 1,
                None if self.buf.len() == self.max => {
                    self.dropping = Some(self.buf.len() + 1);
                    self.buf.clear();
                }
                None => self.buf.push(b),
            }
        }
        out
    }

    /// Forgets an unfinished line (the device vanished mid-line) and says how long it was.
    pub fn take_partial(&mut self) -> Option<usize> {
        let n = self.dropping.take().unwrap_or(self.buf.len());
        self.buf.clear();
        (n > 0).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Framed {
        Framed::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn every_terminator_ends_a_line() {
        let mut f = LineFramer::new(16);
        assert_eq!(
            f.push(b"a=1\r\nb=2\nc=3\rd=4\n\n\r\r"),
            vec![line("a=1"), line("b=2"), line("c=3"), line("d=4")]
        );
        assert_eq!(f.take_partial(), None);
    }

    #[test]
    fn lines_may_arrive_in_pieces() {
        let mut f = LineFramer::new(16);
        assert!(f.push(b"temp").is_empty());
        assert!(f.push(b"=2").is_empty());
        assert_eq!(f.push(b"1\nx"), vec![line("temp=21")]);
        assert_eq!(f.take_partial(), Some(1));
        assert!(f.push(b"\n").is_empty(), "the partial line is gone");
    }

    #[test]
    fn overlong_lines_are_dropped_whole_and_reported_once() {
        let mut f = LineFramer::new(4);
        assert_eq!(f.push(b"abcd\n"), vec![line("abcd")], "exactly max fits");
        assert_eq!(f.push(b"abcdefgh"), vec![], "nothing until the line ends");
        assert_eq!(f.push(b"ij\nok\n"), vec![Framed::Overlong(10), line("ok")]);
        assert!(f.buf.capacity() <= 4096);
        f.push(b"toolong");
        assert_eq!(f.take_partial(), Some(7));
    }
}
