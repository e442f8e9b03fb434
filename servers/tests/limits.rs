//! Cases at scale and at the edges of a mechanism: a thousand clients at once, descriptors
//! past select's FD_SETSIZE, slowloris clients, and an overflowing realtime signal queue.
//! Like the conformance suite, every case runs against every listed model, and what it
//! expects comes from the listing (`clients`, `max_fd`, `family`).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Many client threads: keep their stacks small.
fn spawn_client<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .expect("spawn client thread")
}

/// This process holds one socket per client: lift its own descriptor limit to the maximum.
fn raise_own_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// One client: connect, echo `messages` messages, report how it ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Served,
    /// Closed or reset by the server before any reply: refused.
    Refused,
}

fn echo_client(addr: SocketAddr, id: usize, messages: usize) -> Result<Outcome, String> {
    let mut stream = connect(addr).map_err(|e| format!("client {id}: connect: {e}"))?;
    echo_messages(&mut stream, id, messages)
}

/// Like `echo_client`, but every client is connected before any sends (first barrier) and
/// stays connected until all are done (second barrier), so they are all open at once.
fn held_echo_client(
    addr: SocketAddr,
    id: usize,
    messages: usize,
    barrier: &Barrier,
) -> Result<Outcome, String> {
    let stream = connect(addr).map_err(|e| format!("client {id}: connect: {e}"));
    barrier.wait();
    let outcome = stream.and_then(|mut s| echo_messages(&mut s, id, messages).map(|o| (o, s)));
    barrier.wait();
    outcome.map(|(outcome, _stream)| outcome)
}

fn echo_messages(stream: &mut TcpStream, id: usize, messages: usize) -> Result<Outcome, String> {
    for m in 0..messages {
        let message = payload((id * 1000 + m) as u64, 64 + (id + m) % 200);
        if let Err(e) = stream.write_all(&message) {
            return if m == 0 {
                Ok(Outcome::Refused)
            } else {
                Err(format!("client {id}: write: {e}"))
            };
        }
        let mut back = vec![0u8; message.len()];
        match stream.read_exact(&mut back) {
            Ok(()) if back == message => {}
            Ok(()) => return Err(format!("client {id} message {m}: echo differs")),
            Err(e) if m == 0 && is_closed(&e) => return Ok(Outcome::Refused),
            Err(e) => return Err(format!("client {id} message {m}: read: {e}")),
        }
    }
    Ok(Outcome::Served)
}

fn is_closed(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

/// A thousand clients at once. A model that serves every client at once has them all
/// connected together (held open until all are done); with a descriptor ceiling (select:
/// FD_SETSIZE) it gets 1100, must serve those below the ceiling byte-exact, close the rest
/// cleanly, and keep serving. A model that serves N at a time (one, a pool) gets the 1000
/// connecting at once and serves them all, N at a time.
#[test]
fn a_thousand_clients_at_once() {
    raise_own_nofile();
    for_each_model("echo", |server| {
        let clients = if server.model.max_fd.is_some() {
            1100
        } else {
            1000
        };
        let addr = server.addr;
        let all_at_once = server.model.concurrency().is_none();
        let barrier = Arc::new(Barrier::new(clients));
        let handles: Vec<_> = (0..clients)
            .map(|id| {
                let barrier = Arc::clone(&barrier);
                spawn_client(move || match all_at_once {
                    true => held_echo_client(addr, id, 5, &barrier),
                    false => echo_client(addr, id, 5),
                })
            })
            .collect();
        let outcomes: Vec<Outcome> = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect::<Result<_, _>>()?;
        let served = outcomes.iter().filter(|o| **o == Outcome::Served).count();
        match server.model.max_fd {
            None => ensure!(served == clients, "served {served} of {clients}"),
            Some(max_fd) => {
                // A few descriptors below the ceiling belong to the server itself.
                ensure!(
                    served <= max_fd && served + 32 >= max_fd,
                    "served {served} of {clients}, expected just under {max_fd}"
                );
                let mut after = server.connect().map_err(|e| e.to_string())?;
                echo_once(&mut after, b"still serving")
                    .map_err(|e| format!("after the refusals: {e}"))?;
                ensure!(
                    server.stderr().contains("FD_SETSIZE"),
                    "refusals were not logged"
                );
            }
        }
        ensure!(server.is_alive(), "server died");
        Ok(())
    });
}

/// Fifty slowloris clients (one byte every 100 ms) while ten others echo. A model that
/// serves every client at once serves the ten without an error, and the slow ones byte-exact
/// too. A model that serves at most N <= 50 at once (one at a time, a pool) is held by the
/// slow clients: the ten are not served until the slow clients leave, and then they are.
#[test]
fn slowloris_clients_do_not_stall_others() {
    const SLOW: usize = 50;
    const SLOW_FOR: Duration = Duration::from_secs(2);
    for_each_model("echo", |server| {
        let addr = server.addr;
        let start = Instant::now();
        let slow: Vec<_> = (0..SLOW)
            .map(|id| spawn_client(move || slow_client(addr, id, start + SLOW_FOR)))
            .collect();
        thread::sleep(Duration::from_millis(300));
        let held = server.model.concurrency().is_some_and(|n| n <= SLOW);
        let mut probe = server.connect().map_err(|e| e.to_string())?;
        probe.write_all(b"probe").map_err(|e| e.to_string())?;
        let early = try_read_exact(&mut probe, 5, Duration::from_millis(800));
        if held {
            ensure!(
                early.is_none(),
                "served while every worker was held by a slow client"
            );
        } else {
            ensure!(
                early.as_deref() == Some(b"probe".as_slice()),
                "not served alongside slow clients"
            );
        }
        drop(probe);
        let fast: Vec<_> = (0..10)
            .map(|id| spawn_client(move || echo_client(addr, 10_000 + id, 200)))
            .collect();
        for handle in fast {
            let outcome = handle.join().expect("client thread")?;
            ensure!(outcome == Outcome::Served, "a measured client was refused");
        }
        let slow_served = slow
            .into_iter()
            .map(|h| h.join().expect("slow client thread"))
            .filter(|served| *served)
            .count();
        if !held {
            ensure!(
                slow_served == SLOW,
                "only {slow_served} of {SLOW} slow clients got every byte back"
            );
        }
        Ok(())
    });
}

/// Sends one byte every 100 ms until `until`, reading each echo; true if every byte came
/// back in order.
fn slow_client(addr: SocketAddr, id: usize, until: Instant) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let mut ok = true;
    let mut i = 0u8;
    while Instant::now() < until {
        let byte = (id as u8).wrapping_add(i);
        if stream.write_all(&[byte]).is_err() {
            return false;
        }
        let wait = until.saturating_duration_since(Instant::now()) + Duration::from_millis(200);
        ok &= try_read_exact(&mut stream, 1, wait).as_deref() == Some(&[byte][..]);
        i = i.wrapping_add(1);
        thread::sleep(Duration::from_millis(100));
    }
    ok
}

/// Signal-driven models: with RLIMIT_SIGPENDING lowered to 4, many busy clients overflow the
/// realtime signal queue. The server must notice (plain SIGIO), sweep with poll(2), stay
/// byte-exact, and say how many overflows it saw.
#[test]
fn signal_queue_overflow_is_survived() {
    for_each_model("echo", |server| {
        if server.model.family != "signal-driven" {
            return Ok(()); // no signal queue to overflow
        }
        set_rlimit(server.pid(), libc::RLIMIT_SIGPENDING, 4)
            .map_err(|e| format!("prlimit: {e}"))?;
        let addr = server.addr;
        let handles: Vec<_> = (0..200)
            .map(|id| spawn_client(move || echo_client(addr, id, 20)))
            .collect();
        for handle in handles {
            let outcome = handle.join().expect("client thread")?;
            ensure!(outcome == Outcome::Served, "a client was refused");
        }
        let log = server.stderr();
        ensure!(
            log.contains("RLIMIT_SIGPENDING"),
            "RLIMIT_SIGPENDING not logged at start"
        );
        ensure!(
            log.contains("queue overflowed"),
            "no overflow seen; stderr: {log}"
        );
        let count = log
            .lines()
            .filter(|l| l.contains("queue overflowed"))
            .filter_map(|l| {
                l.rsplit("so far: ")
                    .next()?
                    .trim_end_matches(')')
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        ensure!(count > 0, "overflow count not visible");
        eprintln!(
            "{}: {count} signal queue overflows, every reply byte-exact",
            server.model.name
        );
        Ok(())
    });
}
