//! Splits an attempt log into lines as it is read, in chunks, holding at most [`Lines::cap`]
//! bytes of any one line. A line that fits in the chunk being read is handed on without a copy;
//! only a line split across two reads is gathered, and of an overlong line only its first
//! `cap` bytes are kept while the rest is counted and dropped. So the work is linear in the
//! log's size and the memory bounded whatever the length of its lines.

/// One line of the log, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The whole line.
    Whole(&'a [u8]),
    /// A line longer than the cap: its first bytes and its full length.
    Cut { start: &'a [u8], len: u64 },
}

/// The state between two chunks: the part of a line that a chunk ended in.
pub struct Lines {
    cap: usize,
    /// The kept start of the unfinished line (at most `cap` bytes).
    partial: Vec<u8>,
    /// The unfinished line's length so far, kept bytes included.
    partial_len: u64,
}

impl Lines {
    /// Keeps at most `cap` bytes of each line.
    pub fn new(cap: usize) -> Lines {
        Lines {
            cap,
            partial: Vec::new(),
            partial_len: 0,
        }
    }

    /// Feeds the next chunk of the log; `each` gets every line it completes, in order. Stops at
    /// the first error `each` returns (a closed standard output) and returns it.
    pub fn feed<E>(
        &mut self,
        mut chunk: &[u8],
        each: &mut impl FnMut(Line<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&chunk[..end], &chunk[end + 1..]);
            chunk = rest;
            if self.partial_len == 0 {
                each(self.line(line, line.len() as u64))?;
            } else {
                self.keep(line);
                let line = std::mem::take(&mut self.partial);
                let result = each(self.line(&line, self.partial_len));
                // The buffer is reused for the next split line, so its memory is taken once.
                self.partial = line;
                self.partial.clear();
                self.partial_len = 0;
                result?;
            }
        }
        self.keep(chunk);
        Ok(())
    }

    /// Ends the log: an unfinished last line (no newline yet) is handed to `each` as a line.
    pub fn finish<E>(&mut self, each: &mut impl FnMut(Line<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.partial_len == 0 {
            return Ok(());
        }
        let line = std::mem::take(&mut self.partial);
        let len = std::mem::take(&mut self.partial_len);
        each(self.line(&line, len))
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.partial_len += bytes.len() as u64;
    }

    fn line<'a>(&self, kept: &'a [u8], len: u64) -> Line<'a> {
        if len as usize <= self.cap {
            Line::Whole(kept)
        } else {
            Line::Cut {
                start: &kept[..kept.len().min(self.cap)],
                len,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line as (text, full length), feeding `text` in chunks of `size` bytes.
    fn split(text: &str, size: usize, cap: usize) -> Vec<(String, u64)> {
        let mut lines = Lines::new(cap);
        let mut seen = Vec::new();
        let mut each = |line: Line<'_>| -> Result<(), ()> {
            seen.push(match line {
                Line::Whole(b) => (String::from_utf8_lossy(b).into_owned(), b.len() as u64),
                Line::Cut { start, len } => (String::from_utf8_lossy(start).into_owned(), len),
            });
            Ok(())
        };
        for chunk in text.as_bytes().chunks(size) {
            lines.feed(chunk, &mut each).unwrap();
        }
        lines.finish(&mut each).unwrap();
        seen
    }

    #[test]
    fn lines_come_out_whole_however_the_chunks_fall() {
        let text = "first\n\nthird line\nno newline at the end";
        let expected = vec![
            ("first".to_string(), 5),
            (String::new(), 0),
            ("third line".to_string(), 10),
            ("no newline at the end".to_string(), 21),
        ];
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(split(text, size, 100), expected, "chunks of {size}");
        }
    }

    #[test]
    fn an_overlong_line_keeps_its_start_and_its_length_and_the_next_line_is_intact() {
        let long = "x".repeat(10_000);
        let text = format!("short\n{long}\nafter\n");
        for size in [3, 4096, 20_000] {
            let seen = split(&text, size, 16);
            assert_eq!(
                seen,
                [
                    ("short".to_string(), 5),
                    ("x".repeat(16), 10_000),
                    ("after".to_string(), 5),
                ],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_closed_output_stops_the_feed() {
        let mut lines = Lines::new(100);
        let mut count = 0;
        let result = lines.feed(b"a\nb\nc\n", &mut |_| {
            count += 1;
            if count == 2 { Err("closed") } else { Ok(()) }
        });
        assert_eq!((result, count), (Err("closed"), 2));
    }
}
