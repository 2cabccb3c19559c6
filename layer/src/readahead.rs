//! Read-ahead on a separate thread: decompression (CPU) runs while the applying thread does
//! filesystem syscalls. Buffers are recycled through a return channel, so steady state allocates
//! nothing.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// The consumer end: implements `Read` over the chunks the producer thread sends.
pub(crate) struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    /// A producer error, repeated on every later read so it cannot be mistaken for EOF.
    failed: Option<(io::ErrorKind, String)>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Start a thread that calls `open` and then reads what it returns to the end.
    pub(crate) fn spawn<F>(open: F) -> io::Result<ReadAhead>
    where
        F: FnOnce() -> io::Result<Box<dyn Read + Send>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let (recycle, recycled) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let thread = std::thread::Builder::new()
            .name("layer-read".into())
            .spawn(move || {
                let mut r = match open() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let mut buf = recycled.try_recv().unwrap_or_default();
                    buf.resize(CHUNK, 0);
                    let mut n = 0;
                    // Fill the chunk (decoders return small pieces) so the consumer sees few,
                    // big chunks.
                    let res = loop {
                        match r.read(&mut buf[n..]) {
                            Ok(0) => break Ok(()),
                            Ok(k) => {
                                n += k;
                                if n == buf.len() {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    let eof = n < buf.len();
                    buf.truncate(n);
                    if n > 0 && tx.send(Ok(buf)).is_err() {
                        return; // the consumer gave up
                    }
                    if let Err(e) = res {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if eof {
                        return; // dropping tx signals EOF
                    }
                }
            })?;
        Ok(ReadAhead {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
            done: false,
            failed: None,
            thread: Some(thread),
        })
    }

    /// Read and discard the rest of the stream (so a compressed trailer's checksum is checked).
    pub(crate) fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some((kind, msg)) = &self.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
