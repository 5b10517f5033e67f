//! Console output shared by the guest's consoles.

use std::io::{self, Write};

/// Console output: written through and flushed at once so the guest's prompt appears.
pub struct ConsoleOut<W: Write>(pub W);

impl<W: Write> Write for ConsoleOut<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.0.write(b)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
