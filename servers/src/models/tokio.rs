//! `tokio`: what most Rust users would pick instead: the multi-threaded tokio runtime with
//! `--threads` workers (default 1) and a task per connection.
//!
//! Each task runs the blocking models' loop written with `.await`: read, let the protocol
//! act, write everything. The runtime parks a task whose socket is not ready and drives all of
//! them from epoll underneath (edge-triggered, through mio), so the code reads like `threads`
//! and costs like an event loop. Backpressure is the same as in the blocking models: while
//! `write_all` waits for the client, the task reads nothing more.

use std::io;
use std::net::TcpListener as StdListener;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Config;
use crate::blocking::is_disconnect;
use crate::closing::{IdleClock, LINGER};
use crate::listener::{is_exhaustion, is_transient, BurstLog, EXHAUSTION_BACKOFF};
use crate::protocol::{Protocol, Session, HIGH_WATER, MIN_INPUT_CAPACITY};

const INPUT_CAPACITY: usize = 64 * 1024;
const _: () = assert!(INPUT_CAPACITY >= MIN_INPUT_CAPACITY);

pub fn run(listeners: Vec<StdListener>, config: &Config) -> io::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(config.threads)
        .enable_io()
        .enable_time();
    if let Some(n) = config.global_queue_interval {
        builder.global_queue_interval(n);
    }
    let runtime = builder.build()?;
    let (protocol, idle_timeout) = (config.protocol, config.idle_timeout);
    runtime.block_on(async move {
        // One accept loop per listener (one unless --threads asked for SO_REUSEPORT ones).
        let mut loops = Vec::new();
        for listener in listeners {
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            loops.push(tokio::spawn(accept_loop(listener, protocol, idle_timeout)));
        }
        for handle in loops {
            handle.await.map_err(io::Error::other)??;
        }
        Ok(())
    })
}

async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    let mut exhaustion = BurstLog::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                exhaustion.clear();
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, protocol, idle_timeout).await {
                        eprintln!("tokio: connection: {e}");
                    }
                });
            }
            Err(e) if is_transient(&e) => {}
            Err(e) if is_exhaustion(&e) => {
                exhaustion.hit(|| format!("tokio: accept: {e}; serving open connections, accepting again when descriptors free up"));
                tokio::time::sleep(EXHAUSTION_BACKOFF).await;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("tokio: accept: {e}"))),
        }
    }
}

/// `blocking::serve`, awaited: the same loop, the same session, the same limits, the same
/// lingering close and idle timeout (a `tokio::time` timer instead of a socket timeout).
async fn serve(
    mut stream: TcpStream,
    protocol: Protocol,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    let mut idle = IdleClock::new(idle_timeout);
    let mut session = Session::new(protocol);
    let mut input = vec![0u8; INPUT_CAPACITY];
    let (mut start, mut end) = (0, 0);
    let mut output = Vec::with_capacity(HIGH_WATER);
    let mut eof = false;
    loop {
        let step = session.advance(&input[start..end], &mut output, HIGH_WATER);
        start += step.consumed;
        if start == end {
            (start, end) = (0, 0);
        }
        if step.consumed > 0 {
            idle.progress();
        }
        if !output.is_empty() {
            let write = stream.write_all(&output);
            let written = match idle_timeout {
                // write_all's partial progress is not seen here: a reader that takes the
                // whole timeout to read one high-water mark of replies is closed too.
                Some(limit) => match tokio::time::timeout(limit, write).await {
                    Ok(result) => result,
                    Err(_) => return Ok(()), // idle too long: close
                },
                None => write.await,
            };
            match written {
                Err(e) if is_disconnect(&e) => return Ok(()),
                other => other?,
            }
            output.clear();
            idle.progress();
        }
        if step.close {
            if !eof {
                linger(&mut stream, &mut input).await;
            }
            return Ok(());
        }
        if session.is_streaming() || (step.consumed > 0 && start < end) {
            continue;
        }
        if eof {
            return Ok(()); // half-close: everything the client sent is answered
        }
        if end == input.len() {
            if start == 0 {
                return Err(io::Error::other("request larger than the input buffer"));
            }
            input.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let read = stream.read(&mut input[end..]);
        let read = match idle.remaining() {
            Some(left) => match tokio::time::timeout(left, read).await {
                Ok(result) => result,
                Err(_) => return Ok(()), // idle too long: close
            },
            None => read.await,
        };
        match read {
            Ok(0) => eof = true,
            Ok(n) => end += n,
            Err(e) if is_disconnect(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Lingering close (crate::closing): shut the write side, drop input until the client
/// closes or [`LINGER`] has passed.
async fn linger(stream: &mut TcpStream, scratch: &mut [u8]) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        while let Ok(n) = stream.read(scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
